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
mkdir -p target
cargo test --quiet 2>&1 | tee target/cargo-test.log

echo "== build the wheel (once) and the container's build steps"
rm -rf target/wheels
# The release wheel itself: abi3, manylinux (repaired: it needs only glibc),
# SQLite compiled in. Every test below runs against this file.
TIMEFORMAT='wheel built in %R s'
time sh docker/build-wheel.sh target/wheels
wheel=$(ls target/wheels/sts_job_manager-*.whl)
ls -l "$wheel"
# The Dockerfile's steps, without Docker: the runtime stage installs this
# wheel into a fresh virtualenv and runs the entry point.
bash tests/container_steps.sh "$wheel"

echo "== install the wheel"
python -m pip install --quiet --force-reinstall --no-deps "$wheel"
# The suite runs with no Rust toolchain on PATH: the wheel needs none.
no_rust_path=
IFS=: read -ra path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
    if [ -n "$dir" ] && [ ! -x "$dir/cargo" ] && [ ! -x "$dir/rustc" ]; then
        no_rust_path=${no_rust_path:+$no_rust_path:}$dir
    fi
done
if PATH=$no_rust_path command -v cargo >/dev/null || PATH=$no_rust_path command -v rustc >/dev/null; then
    echo "Rust is still on PATH for the wheel's tests" >&2
    exit 1
fi

echo "== stubtest (_core.pyi against the built extension)"
python -m mypy.stubtest sts_job_manager._core

echo "== pytest (the installed wheel, no Rust on PATH)"
PATH=$no_rust_path python -m pytest -q "$@" 2>&1 | tee target/pytest.log

echo "== Airflow (a separate virtualenv with apache-airflow)"
python3 -m venv .venv-airflow
.venv-airflow/bin/python -m pip install --quiet --upgrade pip
.venv-airflow/bin/python -m pip install --quiet "apache-airflow==3.3.2" "pytest>=7" "pytest-timeout>=2"
.venv-airflow/bin/python -m pip install --quiet --force-reinstall --no-deps "$wheel"
PATH=$no_rust_path .venv-airflow/bin/python -m pytest -q tests/airflow_integration 2>&1 |
    tee target/airflow.log

# How many tests ran in each suite, so a suite that silently ran nothing shows.
passed() { grep -Eo '[0-9]+ passed' "$1" | awk '{n += $1} END {print n + 0}'; }
echo "== tests run: cargo $(passed target/cargo-test.log), pytest $(passed target/pytest.log)," \
    "airflow $(passed target/airflow.log)"
for log in target/cargo-test.log target/pytest.log target/airflow.log; do
    if [ "$(passed "$log")" -eq 0 ]; then
        echo "no test ran in ${log#target/}" >&2
        exit 1
    fi
done
