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
# -rp lists each passed test, so the notebooks' tests are counted apart.
PATH=$no_rust_path python -m pytest -q -rp "$@" 2>&1 | tee target/pytest.log

echo "== Airflow (a separate virtualenv with apache-airflow)"
python3 -m venv .venv-airflow
.venv-airflow/bin/python -m pip install --quiet --upgrade pip
.venv-airflow/bin/python -m pip install --quiet "apache-airflow==3.3.2" "pytest>=7" "pytest-timeout>=2"
.venv-airflow/bin/python -m pip install --quiet --force-reinstall --no-deps "$wheel"
PATH=$no_rust_path .venv-airflow/bin/python -m pytest -q tests/airflow_integration 2>&1 |
    tee target/airflow.log

echo "== benches (small sizes: the figures are printed, not asserted)"
# Each bench at a size that takes seconds, so every README figure's command
# keeps working; the Rust ones in the test profile (`cargo bench` for figures).
: >target/benches.log
bench() {
    echo "-- $*" | tee -a target/benches.log
    "$@" 2>&1 | tee -a target/benches.log
    echo "bench ran: $*" >>target/benches.log
}
bench cargo test --quiet --bench sync_cycle -- 2000
bench cargo test --quiet --bench sync_cycle -- 2000 steady
bench cargo test --quiet --bench sync_cycle -- 2000 waiting
bench cargo test --quiet --bench bigquery_cycle -- 200 --load 500
bench python benches/api_calls.py 200
bench python benches/history_frame.py 20000
bench python benches/failed_object_reads.py 20 2000
bench python benches/list_requests.py 300
bench python benches/makespan.py 12
bench python benches/plan_verify.py 2000
bench python benches/slots.py 100
bench python benches/manifest_rerun.py 2000
bench python benches/status_at_scale.py 2000 1
bench python benches/status_bigquery.py 2000 1 --every 100

# How many tests ran in each suite, so a suite that silently ran nothing shows.
passed() { grep -Eo '[0-9]+ passed' "$1" | awk '{n += $1} END {print n + 0}'; }
notebooks=$(grep -c '^PASSED tests/test_notebooks.py' target/pytest.log || true)
benches=$(grep -c '^bench ran: ' target/benches.log || true)
echo "== tests run: cargo $(passed target/cargo-test.log), pytest $(passed target/pytest.log)" \
    "(notebooks $notebooks), airflow $(passed target/airflow.log), benches $benches"
for log in target/cargo-test.log target/pytest.log target/airflow.log; do
    if [ "$(passed "$log")" -eq 0 ]; then
        echo "no test ran in ${log#target/}" >&2
        exit 1
    fi
done
if [ "$notebooks" -eq 0 ] || [ "$benches" -eq 0 ]; then
    echo "no notebook test or no bench ran" >&2
    exit 1
fi
