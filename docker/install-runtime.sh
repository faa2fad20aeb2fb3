#!/bin/sh
# Installs the wheel(s) in WHEEL_DIR into a new virtualenv at PREFIX with no
# index and no compiler (the Dockerfile's runtime stage runs this; CI runs it
# too, through tests/container_steps.sh), then checks the entry point answers.
set -eu
wheels=$1
prefix=$2
python3 -m venv "$prefix"
"$prefix/bin/pip" install --quiet --no-cache-dir --no-index --disable-pip-version-check "$wheels"/sts_job_manager-*.whl
"$prefix/bin/sts-job-manager" --version
