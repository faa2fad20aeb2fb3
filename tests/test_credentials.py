"""Credentials handed to the core reach every Google call, never a log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import Emulator, Migration

PROJECT = "creds-project"
SERVICE_ACCOUNT = "migrator@creds-project.iam.gserviceaccount.com"


def callers(emulator: Emulator) -> dict[str, int]:
    with urllib.request.urlopen(f"{emulator.url}/_emulator/stats", timeout=10) as response:
        return json.loads(response.read())["callers"]


@pytest.fixture
def sts(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    return emulator


def service_account_key(tmp_path: Path) -> dict[str, str]:
    """A service account key file with a fresh RSA key (offline: the core
    signs its own JWT with it, as google-cloud-auth does for self-signed)."""
    pem = tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(pem),
        ],
        check=True,
        capture_output=True,
    )
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "test-key-1",
        "private_key": pem.read_text(),
        "client_email": SERVICE_ACCOUNT,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def test_a_token_callable_signs_every_sts_request(
    migration: Migration, sts: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    migration.prepare()
    issued = []

    def token() -> str:
        issued.append(1)
        return "ya29.secret-token-value"

    manager = sjm.Manager(migration.options(transfer="sts", project=PROJECT), credentials=token)
    manager.run_until_done(timeout=120)
    seen = callers(sts)
    assert set(seen) == {"bearer"}, seen
    assert issued, "the callable was asked for tokens"
    assert "secret-token-value" not in capfd.readouterr().err


def test_a_service_account_key_reaches_the_core(
    migration: Migration, sts: Emulator, tmp_path: Path
) -> None:
    migration.prepare()
    key = service_account_key(tmp_path)
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(key))
    options = migration.options(transfer="sts", project=PROJECT)
    # As a mapping, as a file path: both sign with the key's own JWT.
    sjm.Manager(options, credentials=key).run_once()
    sjm.pause_all_jobs(options, credentials=key_file)
    assert set(callers(sts)) == {SERVICE_ACCOUNT}


def test_bad_credentials_are_refused_without_echoing_them(tmp_path: Path) -> None:
    (tmp_path / "s.db").touch()  # an empty state file: credentials are checked first
    options = {"state": f"sqlite:{tmp_path / 's.db'}", "transfer": "sts", "project": PROJECT}
    with pytest.raises(sjm.InputError) as raised:
        sjm.Manager(options, credentials="not json but a secret")
    assert "secret" not in str(raised.value)
    with pytest.raises(sjm.TransferError, match="not supported") as unsupported:
        sjm.Manager(options, credentials={"type": "external_account", "secret": "s3cr3t"})
    assert "s3cr3t" not in str(unsupported.value)
    with pytest.raises(TypeError):
        sjm.Manager(options, credentials=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["directory", "missing"])
def test_a_credentials_file_that_cannot_be_read_is_named(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "key.json"
    if kind == "directory":
        path.mkdir()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "sts-pause-all-jobs"), "--transfer", "sts"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "GOOGLE_APPLICATION_CREDENTIALS": str(path),
            "GOOGLE_CLOUD_PROJECT": "named-project",
        },
    )
    assert result.returncode == 1, result.stderr
    assert str(path) in result.stderr
    assert ("a directory" if kind == "directory" else "cannot be read") in result.stderr


def test_sigterm_stops_the_manager_waiting_for_a_token(migration: Migration) -> None:
    """A token endpoint that accepts and never answers: SIGTERM ends the wait."""
    import signal
    import socket

    migration.prepare()
    with socket.socket() as endpoint:
        endpoint.bind(("127.0.0.1", 0))
        endpoint.listen(8)
        key = migration.root.parent / "user.json"
        key.write_text(
            json.dumps(
                {
                    "type": "authorized_user",
                    "client_id": "x.apps.googleusercontent.com",
                    "client_secret": "not-a-secret",
                    "refresh_token": "not-a-token",
                    "token_uri": f"http://127.0.0.1:{endpoint.getsockname()[1]}/token",
                }
            )
        )
        env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": str(key)}
        env.pop("STORAGE_TRANSFER_EMULATOR_HOST", None)
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "sts-job-manager"),
                *migration.state_args(),
                "--transfer",
                "sts",
                "--project",
                "waiting-project",
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        # The manager is waiting for its token once it has connected.
        endpoint.settimeout(30)
        connection, _ = endpoint.accept()
        with connection:
            process.send_signal(signal.SIGTERM)
            # A wait that ignores the signal ends the test at this timeout.
            _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    assert "stopped by a signal" in stderr
    assert "not-a-token" not in stderr and "not-a-secret" not in stderr
