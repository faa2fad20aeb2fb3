"""Secrets never reach the output, at any log level, while the tokens they
make do reach the service (the emulator checks them as Google does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import BIN, Emulator, Migration, public_jwk, rsa_private_key_pem

KEY_ID = "0123456789abcdef0123456789abcdef01234567"
ACCOUNT = "manager@secret-test-project.iam.gserviceaccount.com"


def service_account_key(directory: Path) -> tuple[Path, str]:
    pem = rsa_private_key_pem()
    key = {
        "type": "service_account",
        "project_id": "secret-test-project",
        "private_key_id": KEY_ID,
        "private_key": pem,
        "client_email": ACCOUNT,
        "client_id": "100000000000000000001",
        "token_uri": "http://127.0.0.1:9/token",
    }
    path = directory / "key.json"
    path.write_text(json.dumps(key))
    return path, pem


def assert_no_key_material(output: str, pem: str) -> None:
    body = "".join(line for line in pem.splitlines() if "PRIVATE KEY" not in line)
    for chunk in (body[i : i + 16] for i in range(0, len(body), 16)):
        assert chunk not in output, "a piece of the private key was printed"
    assert KEY_ID not in output, "the key id was printed"
    assert "eyJ" not in output, "a JWT (an access token) was printed"
    assert "Bearer" not in output


def test_trace_logs_never_show_the_key_or_the_token_it_signs(
    migration: Migration, emulator: Emulator, tmp_path: Path
) -> None:
    """A service account key handed to the core: it signs a JWT that the
    emulator verifies with the account's public key (so a token was made
    and sent), and neither appears in a TRACE log."""
    migration.prepare()
    key_path, pem = service_account_key(tmp_path)
    emulator.check_credentials(service_accounts={ACCOUNT: [public_jwk(pem, KEY_ID)]})
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env.update(STORAGE_TRANSFER_EMULATOR_HOST=emulator.host, LOGLEVEL="TRACE")
    script = (
        "import pathlib, sys, sts_job_manager as sjm\n"
        "print(sjm.pause_all_jobs({'transfer': 'sts', 'project': 'secret-test-project'},"
        " credentials=pathlib.Path(sys.argv[1])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(key_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    checked = emulator.stats()["credentials"]
    assert checked["accepted"] >= 1 and checked["refused"] == {}, checked
    assert emulator.stats()["callers"] == {ACCOUNT: checked["accepted"]}
    assert_no_key_material(output, pem)


def test_trace_logs_never_show_user_credentials_or_their_token(
    migration: Migration, emulator: Emulator, tmp_path: Path
) -> None:
    """Application Default Credentials of a user (a refresh token): the tool
    gets an access token from the token endpoint (the emulator's), then
    calls Google (unreachable here, or refusing the token): exit 1, and no
    secret and no token in a TRACE log."""
    migration.prepare()
    emulator.check_credentials(refresh_tokens={"1//refresh-secret-value": "user@example.com"})
    user = tmp_path / "user.json"
    user.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "x.apps.googleusercontent.com",
                "client_secret": "client-secret-value",
                "refresh_token": "1//refresh-secret-value",
                "token_uri": f"{emulator.url}/token",
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env.update(GOOGLE_APPLICATION_CREDENTIALS=str(user), LOGLEVEL="TRACE")
    result = subprocess.run(
        [str(BIN / "sts-pause-all-jobs"), "--transfer", "sts", "--project", "secret-project"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert emulator.stats()["credentials"]["granted"] >= 1, "the tool made a token"
    for secret in ("refresh-secret-value", "client-secret-value", "ya29.", "Bearer"):
        assert secret not in output, f"{secret!r} was printed"
