"""Secrets never reach the output, at any log level."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import BIN, Migration


def service_account_key(directory: Path) -> tuple[Path, str]:
    pem = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = {
        "type": "service_account",
        "project_id": "secret-test-project",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "manager@secret-test-project.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": "http://127.0.0.1:9/token",
    }
    path = directory / "key.json"
    path.write_text(json.dumps(key))
    return path, pem


def test_trace_logs_never_show_the_key_or_a_token(migration: Migration, tmp_path: Path) -> None:
    migration.prepare()
    key_path, pem = service_account_key(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env.update(GOOGLE_APPLICATION_CREDENTIALS=str(key_path), LOGLEVEL="TRACE")
    # No network here: the self-signed token is made, the call to Google fails.
    result = subprocess.run(
        [str(BIN / "sts-pause-all-jobs"), "--transfer", "sts"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    body = "".join(line for line in pem.splitlines() if "PRIVATE KEY" not in line)
    for chunk in (body[i : i + 16] for i in range(0, len(body), 16)):
        assert chunk not in output, "a piece of the private key was printed"
    assert "0123456789abcdef0123456789abcdef01234567" not in output, "the key id was printed"
    assert "eyJ" not in output, "a JWT (an access token) was printed"
    assert "Bearer" not in output
