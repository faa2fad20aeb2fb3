#!/usr/bin/env bash
# Every test, from a fresh clone: lint, Rust unit tests, then the wheel built
# and installed into .venv exactly as a user installs it, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2" "ruff>=0.5" \
    google-cloud-storage-transfer google-api-python-client

echo "== lint"
cargo fmt --check
cargo clippy --all-targets --features python --quiet -- -D warnings
ruff check python tests benches
ruff format --check python tests benches

echo "== cargo test"
cargo test --quiet

echo "== install (pip install .)"
python -m pip install --quiet --force-reinstall --no-deps .

echo "== pytest"
python -m pytest -q "$@"
