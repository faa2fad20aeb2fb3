"""Shared fixtures: sample buckets on the local engine, SQLite state, and
helpers to run the installed command-line tools and read the engine's record."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
# Intervals short enough for a test to see many cycles.
FAST = ["--sleep-timeout", "0.2", "--job-interval", "0.2", "--metrics-interval", "0.2"]


# The native module has its own SQLite (bundled in the wheel); Python's
# sqlite3 module is another copy. Two copies must never open one file in one
# process: their POSIX locks do not see each other (a write through one gets
# past the other's EXCLUSIVE lock) and closing either drops both's locks. So
# the tests, which also drive managers in-process, read and write SQLite files
# only in this child process, as a user's `sqlite3` shell would.
_SQL_CHILD = r"""
import json, sqlite3, sys
for line in sys.stdin:
    request = json.loads(line)
    try:
        db = sqlite3.connect(request["path"], timeout=30)
        try:
            if request["many"]:
                db.executemany(request["sql"], request["params"])
                rows = []
            else:
                rows = db.execute(request["sql"], request["params"]).fetchall()
            db.commit()
        finally:
            db.close()
        answer = {"rows": rows}
    except sqlite3.Error as e:
        answer = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(answer), flush=True)
"""
_sql_child: subprocess.Popen | None = None

# Requests the emulators' strict layer checked over the whole session, and
# those it refused (tests that send bad requests on purpose included).
STRICT_TOTALS = {"checked": 0, "refused": 0}


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 (pytest's hook)
    terminalreporter.write_line(
        f"strict mode: {STRICT_TOTALS['checked']} requests checked against Google's discovery "
        f"documents, {STRICT_TOTALS['refused']} refused"
    )


_sql_lock = threading.Lock()


class SqlError(Exception):
    """An error SQLite raised in the child (``kind``: its sqlite3 class name)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def sql(path: Path | str, statement: str, params: object = (), many: bool = False) -> list[tuple]:
    """Runs one statement (or ``executemany``) on a SQLite file in the child
    process and commits; returns the rows as tuples."""
    global _sql_child
    with _sql_lock:
        if _sql_child is None or _sql_child.poll() is not None:
            _sql_child = subprocess.Popen(
                [sys.executable, "-c", _SQL_CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert _sql_child.stdin is not None and _sql_child.stdout is not None
        request = {"path": str(path), "sql": statement, "params": params, "many": many}
        _sql_child.stdin.write(json.dumps(request) + "\n")
        _sql_child.stdin.flush()
        answer = json.loads(_sql_child.stdout.readline())
    if "error" in answer:
        raise SqlError(answer["error"], answer["message"])
    return [tuple(row) for row in answer["rows"]]


@pytest.fixture(scope="session", autouse=True)
def _stop_sql_child():
    yield
    if _sql_child is not None:
        _sql_child.stdin.close()  # type: ignore[union-attr]
        _sql_child.wait(timeout=30)
        _sql_child.stdout.close()  # type: ignore[union-attr]


def tool(
    name: str, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Runs an installed console script and returns its completed process."""
    result = subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Migration:
    """A source bucket with known objects, an empty destination and state."""

    root: Path
    state: Path
    prefixes: list[str]
    objects: dict[str, bytes] = field(default_factory=dict)
    source_bucket: str = "migration-source"
    destination_bucket: str = "migration-destination"

    @property
    def source(self) -> Path:
        return self.root / self.source_bucket

    @property
    def destination(self) -> Path:
        return self.root / self.destination_bucket

    @property
    def prefix_file(self) -> Path:
        return self.root.parent / "prefixes.json"

    def state_args(self) -> list[str]:
        """For tools that use the job table (sts-prepare-tables)."""
        return ["--state", f"sqlite:{self.state}"]

    def transfer_args(self) -> list[str]:
        """For tools that use the transfer service (sts-pause-all-jobs, ...)."""
        return ["--transfer", f"local:{self.root}"]

    def backend_args(self) -> list[str]:
        """For the manager, which uses both."""
        return [*self.state_args(), *self.transfer_args()]

    def options(self, **extra: object) -> dict[str, object]:
        return {
            "state": f"sqlite:{self.state}",
            "transfer": f"local:{self.root}",
            "sleep_timeout": 0.2,
            "job_interval": 0.2,
            "metrics_interval": 0.2,
            **extra,
        }

    def set_faults(self, **faults: object) -> None:
        engine = self.root / ".sts-engine"
        engine.mkdir(exist_ok=True)
        (engine / "faults.json").write_text(json.dumps(faults))

    def prepare(self) -> None:
        self.prefix_file.write_text(json.dumps(self.prefixes))
        tool(
            "sts-prepare-tables",
            *self.state_args(),
            "--job-prefix-source-file",
            str(self.prefix_file),
        )

    def jobs(self) -> dict[str, tuple[str, str | None]]:
        rows = sql(self.state, "SELECT prefix, status, job_name FROM sts_job")
        return {prefix: (status, job) for prefix, status, job in rows}

    def history(self) -> list[tuple[str, str, str | None, str | None]]:
        return sql(
            self.state,
            "SELECT prefix, status, job_name, operation_results"
            " FROM sts_job_history ORDER BY rowid",
        )

    def operations(self) -> list[dict]:
        """The engine's record of every operation, oldest first."""
        database = self.root / ".sts-engine" / "engine.db"
        if not database.exists():
            return []
        try:
            rows = sql(database, "SELECT status, end_time, body FROM operations ORDER BY rowid")
        except SqlError as e:  # the engine has not made its tables yet
            if e.kind != "OperationalError":
                raise
            return []
        ops = []
        for status, end_time, body in rows:
            op = json.loads(body)
            op["status"], op["endTime"] = status, end_time
            ops.append(op)
        return ops

    def engine_jobs(self) -> list[dict]:
        database = self.root / ".sts-engine" / "engine.db"
        rows = sql(database, "SELECT status, body FROM jobs ORDER BY rowid")
        return [{**json.loads(body), "status": status} for status, body in rows]

    def active_operations(self) -> int:
        return sum(op["status"] in ("IN_PROGRESS", "QUEUED") for op in self.operations())

    def assert_no_overlapping_operations(self) -> None:
        """No prefix ever had two operations at once (the engine's record)."""
        by_prefix: dict[str, list[tuple[str, str]]] = {}
        for op in self.operations():
            prefix = op["transferSpec"]["objectConditions"]["includePrefixes"][0]
            by_prefix.setdefault(prefix, []).append((op["startTime"], op["endTime"] or "~"))
        for prefix, spans in by_prefix.items():
            spans.sort()
            for (_, end), (start, _) in zip(spans, spans[1:]):
                assert end <= start, f"{prefix} had two operations at once: {spans}"

    def assert_copied(self, skip: tuple[str, ...] = ()) -> None:
        for name, data in self.objects.items():
            if name.startswith(skip):
                continue
            copied = self.destination / name
            assert copied.is_file(), f"{name} was not copied"
            assert copied.read_bytes() == data, f"{name} differs"


def make_migration(
    base: Path, prefixes: int = 6, files_per_prefix: int = 5, size: int = 2000
) -> Migration:
    root = base / "buckets"
    migration = Migration(root=root, state=base / "state.db", prefixes=[])
    migration.destination.mkdir(parents=True)
    for p in range(prefixes):
        prefix = f"data/p{p:02d}/"
        migration.prefixes.append(prefix)
        for f in range(files_per_prefix):
            name = f"{prefix}nested/file-{f}.bin"
            data = hashlib.sha256(f"{name}".encode()).digest() * (size // 32 + 1)
            data = data[: size + f]
            path = migration.source / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            migration.objects[name] = data
    # An object outside every prefix must never be copied.
    (migration.source / "elsewhere.txt").write_text("not part of the migration")
    return migration


class Emulator:
    """A running `sts-emulator` on 127.0.0.1 over a bucket root, in strict
    mode: every request is checked against Google's discovery documents, and
    `stop()` fails the test that sent one they refuse (unless the test sends
    bad requests on purpose: `expect_violations=True`)."""

    def __init__(self, root: Path, *flags: str, expect_violations: bool = False) -> None:
        self.root = root
        self.expect_violations = expect_violations
        # Bad requests a test sends on purpose, one by one.
        self.expected_violations = 0
        self.process = subprocess.Popen(
            [str(BIN / "sts-emulator"), "--root", str(root), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.process.kill()
            raise AssertionError(f"sts-emulator did not start: {line!r}")
        self.url = line.split("listening on ")[1].strip()
        self.host = self.url.removeprefix("http://")

    def call(self, method: str, path: str, body: object = None) -> dict:
        """One JSON request to the emulator (a REST call as gcloud makes it)."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def set_faults(self, **faults: object) -> dict:
        return self.call("POST", "/_emulator/faults", faults)

    def check_credentials(self, **registration: object) -> dict:
        """From now on, every API request must carry credentials Google would
        accept: the public keys of `service_accounts` ({email: [jwk]}), the
        `refresh_tokens` ({token: user}) and `token_lifetime_seconds` of the
        tokens its `/token` endpoint issues."""
        return self.call("POST", "/_emulator/credentials", registration)

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_emulator/stats", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        strict = None
        if self.process.poll() is None:
            try:
                strict = self.stats()["strict"]
            except (OSError, ValueError, KeyError):
                strict = None
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        if strict:
            STRICT_TOTALS["checked"] += strict["checked"]
            STRICT_TOTALS["refused"] += strict["violation_count"]
        if (
            strict
            and strict["violation_count"] != self.expected_violations
            and not self.expect_violations
        ):
            raise AssertionError(
                f"{strict['violation_count']} request(s) that Google's discovery documents "
                "refuse:\n" + "\n".join(strict["violations"][:20])
            )


def rsa_private_key_pem() -> str:
    """A fresh 2048-bit RSA key (PKCS#8 PEM), as in a service account key file."""
    return subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def public_jwk(private_key_pem: str, kid: str | None = None) -> dict[str, str]:
    """The public half of a key as Google publishes a service account's keys
    (JWK: modulus and exponent, base64url)."""
    import base64

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    numbers = load_pem_private_key(private_key_pem.encode(), password=None).public_key()
    public = numbers.public_numbers()  # type: ignore[union-attr]

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    jwk = {"kty": "RSA", "alg": "RS256", "n": b64(public.n), "e": b64(public.e)}
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def gapic_client(emulator: Emulator):
    """Google's own STS client (GAPIC, REST transport) on the emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage_transfer

    return storage_transfer.StorageTransferServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    )


def original_tool_start(client, migration: Migration, project: str, prefix: str) -> str:
    """Starts `prefix` as Google's original tool does: a job with no name
    (STS assigns one), one-time today; returns the job's name."""
    import datetime

    today = datetime.datetime.now(datetime.timezone.utc).date()
    date = {"year": today.year, "month": today.month, "day": today.day}
    job = client.create_transfer_job(
        {
            "transfer_job": {
                "description": f"Created via STS Job Manager - {prefix}",
                "project_id": project,
                "status": 1,
                "transfer_spec": {
                    "gcs_data_source": {"bucket_name": migration.source_bucket},
                    "gcs_data_sink": {"bucket_name": migration.destination_bucket},
                    "object_conditions": {"include_prefixes": [prefix]},
                },
                "schedule": {"schedule_start_date": date, "schedule_end_date": date},
            }
        }
    )
    return job.name


@pytest.fixture
def emulator(migration: Migration):
    running = Emulator(migration.root)
    yield running
    running.stop()


@pytest.fixture
def migration(tmp_path: Path) -> Migration:
    return make_migration(tmp_path)


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    os.environ.setdefault("LOGLEVEL", "INFO")


FAILING_PREFIX = "data/p01/"


def finished_migration_with_failures(base: Path) -> Migration:
    """A migration run to the end in which every object of one prefix failed
    (injected PERMISSION_DENIED) and no prefix was retried."""
    import sts_job_manager as sjm

    migration = make_migration(base, prefixes=4, files_per_prefix=3)
    migration.prepare()
    migration.set_faults(fail_objects_matching=f"{FAILING_PREFIX}*", error_code="PERMISSION_DENIED")
    manager = sjm.Manager(migration.options(no_retry_on_job_error=True))
    manager.run_until_done(timeout=120)
    return migration


@pytest.fixture(scope="module")
def failed_migration(tmp_path_factory: pytest.TempPathFactory) -> Migration:
    return finished_migration_with_failures(tmp_path_factory.mktemp("failed"))


# The Airflow tests run apart, with the Python of the Airflow virtualenv
# (tests/run.sh); this one has no Airflow.
collect_ignore = [] if importlib.util.find_spec("airflow") else ["airflow_integration"]
