#!/bin/sh
# Builds the release wheel into DIR (default target/wheels): the Dockerfile's
# build stage runs this, and so does tests/run.sh, so the two cannot drift.
# Needs a Rust toolchain and Python 3; maturin is used from PATH or installed
# into a throwaway virtualenv.
set -eu
out=${1:-target/wheels}
if ! command -v maturin >/dev/null 2>&1; then
    python3 -m venv /tmp/maturin-venv
    /tmp/maturin-venv/bin/pip install --quiet "maturin>=1.5,<2"
    PATH=/tmp/maturin-venv/bin:$PATH
fi
maturin build --release --quiet --out "$out"
