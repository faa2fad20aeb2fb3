"""Credentials handed to the core reach every Google call, never a log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import Emulator, Migration, public_jwk, rsa_private_key_pem

PROJECT = "creds-project"
SERVICE_ACCOUNT = "migrator@creds-project.iam.gserviceaccount.com"


def callers(emulator: Emulator) -> dict[str, int]:
    with urllib.request.urlopen(f"{emulator.url}/_emulator/stats", timeout=10) as response:
        return json.loads(response.read())["callers"]


@pytest.fixture
def sts(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    return emulator


def service_account_key(token_uri: str = "https://oauth2.googleapis.com/token") -> dict[str, str]:
    """A service account key file with a fresh RSA key (offline: the core
    signs its own JWT with it, as google-cloud-auth does for self-signed)."""
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "test-key-1",
        "private_key": rsa_private_key_pem(),
        "client_email": SERVICE_ACCOUNT,
        "client_id": "1",
        "token_uri": token_uri,
    }


def api_status(emulator: Emulator, token: str | None) -> int:
    """The HTTP status of one STS call (googleServiceAccounts.get) made with
    `token` as its bearer token."""
    request = urllib.request.Request(f"{emulator.url}/v1/googleServiceAccounts/{PROJECT}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def token_grant(emulator: Emulator, assertion: str) -> tuple[int, dict]:
    """A JWT bearer grant posted to the emulator's token endpoint."""
    form = urllib.parse.urlencode(
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    ).encode()
    try:
        with urllib.request.urlopen(f"{emulator.url}/token", data=form, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assertion(key: dict[str, str], **claims: object) -> str:
    """A service account's signed assertion (RS256, google-auth's signer)."""
    from google.auth import crypt, jwt

    now = int(time.time())
    payload = {
        "iss": key["client_email"],
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "aud": key["token_uri"],
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    signer = crypt.RSASigner.from_service_account_info(key)
    return jwt.encode(signer, payload).decode()


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
    key = service_account_key()
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(key))
    # The emulator checks each request's self-signed JWT from now on: its
    # RS256 signature with the account's public key, its expiry, its scope.
    sts.check_credentials(
        service_accounts={SERVICE_ACCOUNT: [public_jwk(key["private_key"], "test-key-1")]}
    )
    options = migration.options(transfer="sts", project=PROJECT)
    # As a mapping, as a file path: both sign with the key's own JWT.
    sjm.Manager(options, credentials=key).run_once()
    sjm.pause_all_jobs(options, credentials=key_file)
    assert set(callers(sts)) == {SERVICE_ACCOUNT}
    checked = sts.stats()["credentials"]
    assert checked["refused"] == {} and checked["accepted"] >= 2, checked


def test_a_key_the_account_does_not_have_is_refused(migration: Migration, sts: Emulator) -> None:
    """Same account, same key id, another private key: the signature fails."""
    migration.prepare()
    key = service_account_key()
    sts.check_credentials(
        service_accounts={SERVICE_ACCOUNT: [public_jwk(rsa_private_key_pem(), "test-key-1")]}
    )
    with pytest.raises(sjm.StsJobManagerError) as refused:
        sjm.Manager(migration.options(transfer="sts", project=PROJECT), credentials=key)
    assert "invalid authentication credentials" in str(refused.value), refused.value
    refused_for = set(sts.stats()["credentials"]["refused"])
    assert refused_for == {"invalid JWT signature"}, refused_for
    assert not migration.operations()


def test_the_token_endpoint_checks_assertions_as_google_does(
    migration: Migration, sts: Emulator
) -> None:
    """The JWT bearer grant (google-auth's service account credentials): a
    signed assertion with the right key, audience and expiry gets a token;
    a wrong key, a wrong audience or an expired assertion gets none; the
    token is refused once it has expired on the emulator's clock."""
    import google.auth.exceptions
    import google.auth.transport.requests
    from google.oauth2 import service_account

    key = service_account_key(token_uri=f"{sts.url}/token")
    sts.check_credentials(
        service_accounts={SERVICE_ACCOUNT: [public_jwk(key["private_key"], "test-key-1")]},
        token_lifetime_seconds=600,
    )
    assert api_status(sts, None) == 401, "checking is on: an anonymous call is refused"
    assert api_status(sts, "ya29.made-up") == 401
    # Google's own library makes the grant.
    credentials = service_account.Credentials.from_service_account_info(
        key, scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    credentials.refresh(google.auth.transport.requests.Request())
    assert credentials.token and credentials.token.startswith("ya29.")
    assert api_status(sts, credentials.token) == 200

    wrong_key = {**key, "private_key": rsa_private_key_pem()}
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        service_account.Credentials.from_service_account_info(
            wrong_key, scopes=["https://www.googleapis.com/auth/cloud-platform"]
        ).refresh(google.auth.transport.requests.Request())
    now = int(time.time())
    cases = {
        "assertion for another audience": assertion(key, aud="https://example.com/token"),
        "assertion expired": assertion(key, iat=now - 7200, exp=now - 3600),
        "assertion valid for more than an hour": assertion(key, exp=now + 7200),
    }
    for reason, signed in cases.items():
        status, body = token_grant(sts, signed)
        assert (status, body["error"]) == (400, "invalid_grant"), (reason, body)
        assert body["error_description"] == reason
    status, body = token_grant(sts, assertion(key))
    assert status == 200 and body["expires_in"] == 599, body
    refused = sts.stats()["credentials"]["refused"]
    assert refused == {
        "no bearer token": 1,
        "unknown access token": 1,
        "invalid JWT signature": 1,
        **dict.fromkeys(cases, 1),
    }, refused

    # Ten minutes later on the emulator's clock, the first token has expired.
    sts.set_faults(clock_offset_seconds=600)
    assert api_status(sts, credentials.token) == 401
    assert sts.stats()["credentials"]["refused"]["access token expired"] == 1


def test_the_core_refreshes_a_token_before_it_expires(migration: Migration, sts: Emulator) -> None:
    """User credentials whose tokens live 12 s: a manager that keeps working
    asks the token endpoint again, and never sends an expired token."""
    migration.prepare()
    sts.set_faults(bytes_per_second=200)  # the migration outlasts the first token
    sts.check_credentials(
        refresh_tokens={"refresh-me": "user@example.com"}, token_lifetime_seconds=12
    )
    user = {
        "type": "authorized_user",
        "client_id": "x.apps.googleusercontent.com",
        "client_secret": "not-a-secret",
        "refresh_token": "refresh-me",
        "token_uri": f"{sts.url}/token",
    }
    manager = sjm.Manager(migration.options(transfer="sts", project=PROJECT), credentials=user)
    cycles = 0
    while sts.stats()["credentials"]["tokens_used"] < 3:
        cycles += 1
        # Each cycle lists operations; ~10 s per token: 3 tokens in ~25 s.
        assert cycles <= 300, f"no third token after {cycles} cycles: {sts.stats()['credentials']}"
        manager.run_once()
        time.sleep(0.2)
    checked = sts.stats()["credentials"]
    assert checked["refused"] == {}, checked
    assert checked["granted"] >= 3, checked
    assert set(callers(sts)) == {"user@example.com"}


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
