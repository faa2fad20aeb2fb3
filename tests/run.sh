#!/usr/bin/env bash
# Every test, from a fresh clone: lint, Rust unit tests, then the wheel built
# once and installed into .venv (and .venv-airflow) exactly as a user
# installs it, then pytest, then the Airflow tests with a real Airflow.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2" "ruff>=0.5" \
    google-cloud-storage-transfer google-api-python-client "google-cloud-storage>=3" \
    "pandas>=2" "pyarrow>=14" "matplotlib>=3.7" "nbclient>=0.10" "nbformat>=5" "ipykernel>=6" \
    "mypy>=1.18"
# bqemulator (the BigQuery emulator the BigQuery tests start) works offline
# only with numpy and DuckDB's spatial extension installed from PyPI and loaded
# once; otherwise it tries to download the extension when it starts.
python -m pip install --quiet "bqemulator==1.4.*" numpy "duckdb==1.5.5" \
    "duckdb-extension-spatial==1.5.5" "duckdb-extensions==1.5.5"
python -c "import duckdb_extensions; duckdb_extensions.import_extension('spatial')"

echo "== lint"
cargo fmt --check
cargo clippy --all-targets --features python --quiet -- -D warnings
ruff check python tests benches
ruff format --check python tests benches

echo "== cargo test"
cargo test --quiet

echo "== build and install the wheel"
rm -rf target/wheels
# A local test wheel: it links the system SQLite (as Python does), so it is
# not repaired into a manylinux one (that would bundle a second copy).
maturin build --release --quiet --auditwheel skip --out target/wheels
wheel=$(ls target/wheels/sts_job_manager-*.whl)
python -m pip install --quiet --force-reinstall --no-deps "$wheel"

echo "== stubtest (_core.pyi against the built extension)"
python -m mypy.stubtest sts_job_manager._core

echo "== pytest"
python -m pytest -q "$@"

echo "== Airflow (a separate virtualenv with apache-airflow)"
python3 -m venv .venv-airflow
.venv-airflow/bin/python -m pip install --quiet --upgrade pip
.venv-airflow/bin/python -m pip install --quiet "apache-airflow==3.3.2" "pytest>=7" "pytest-timeout>=2"
.venv-airflow/bin/python -m pip install --quiet --force-reinstall --no-deps "$wheel"
.venv-airflow/bin/python -m pytest -q tests/airflow_integration
