"""The BigQuery state store through the installed tools, against bqemulator
(started here on a free 127.0.0.1 port, stopped after), with the local
transfer engine. Everything is read back through the BigQuery REST API."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BIN, FAST, Emulator, Migration, make_migration, tool

PROJECT = "sts-jm-test"
BQEMULATOR = Path(sys.executable).parent / "bqemulator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BigQuery:
    """A running bqemulator and a few REST calls against it."""

    host: str
    project: str
    log: Path

    def url(self, path: str) -> str:
        return f"http://{self.host}/bigquery/v2/projects/{self.project}/{path}"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url(path), timeout=30) as response:
            return json.load(response)

    def query(self, sql: str) -> list[dict]:
        """Runs GoogleSQL; rows as dicts. Errors (also in a 200 body) raise."""
        body = json.dumps(
            {"query": sql, "useLegacySql": False, "formatOptions": {"useInt64Timestamp": True}}
        ).encode()
        request = urllib.request.Request(
            self.url("queries"), body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        names = [f["name"] for f in answer.get("schema", {}).get("fields", [])]
        return [dict(zip(names, [c["v"] for c in row["f"]])) for row in answer.get("rows", [])]

    def requests_logged(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def bigquery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQuery]:
    rest, grpc = free_port(), free_port()
    log = tmp_path_factory.mktemp("bqemulator") / "bqemulator.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(BQEMULATOR),
                "start",
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                str(rest),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                str(grpc),
                "--project",
                PROJECT,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    emulator = BigQuery(host=f"127.0.0.1:{rest}", project=PROJECT, log=log)
    strict = None
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                emulator.get("datasets")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "bqemulator did not start"
                time.sleep(0.2)
        # Every request reaches bqemulator through the strict layer, which
        # refuses what real BigQuery's discovery document does not admit.
        root = tmp_path_factory.mktemp("strict-bigquery")
        strict = Emulator(root, "--bigquery-upstream", emulator.host)
        emulator.host = strict.host
        yield emulator
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if strict is not None:
            strict.stop()


@pytest.fixture
def dataset(bigquery: BigQuery, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh dataset name; the tools started by the test see the emulator."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery.host)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    return f"mig_{uuid.uuid4().hex[:10]}"


def bq_state_args(dataset: str) -> list[str]:
    """For sts-prepare-tables."""
    return ["--state", "bigquery", "--project", PROJECT, "--dataset", dataset]


def bq_args(migration: Migration, dataset: str) -> list[str]:
    """For the manager."""
    return [*bq_state_args(dataset), *migration.transfer_args()]


def schema(table: dict) -> list[tuple[str, str, str]]:
    return [(f["name"], f["type"], f.get("mode", "NULLABLE")) for f in table["schema"]["fields"]]


def test_prepare_creates_the_exact_schemas_and_loads_updatable_rows(
    bigquery: BigQuery, dataset: str, migration: Migration
) -> None:
    migration.prefix_file.write_text(json.dumps(migration.prefixes[:4]))
    args = [
        *bq_state_args(dataset),
        "--dataset-location",
        "EU",
        "--job-prefix-source-file",
        str(migration.prefix_file),
    ]
    tool("sts-prepare-tables", *args)

    assert bigquery.get(f"datasets/{dataset}")["location"] == "EU"
    assert schema(bigquery.get(f"datasets/{dataset}/tables/sts_job")) == [
        ("prefix", "STRING", "REQUIRED"),
        ("status", "STRING", "REQUIRED"),
        ("job_name", "STRING", "NULLABLE"),
        ("last_updated", "TIMESTAMP", "REQUIRED"),
    ]
    assert schema(bigquery.get(f"datasets/{dataset}/tables/sts_job_history")) == [
        ("prefix", "STRING", "REQUIRED"),
        ("status", "STRING", "REQUIRED"),
        ("job_name", "STRING", "NULLABLE"),
        ("operation_results", "STRING", "NULLABLE"),
        ("timestamp", "TIMESTAMP", "REQUIRED"),
    ]

    # Re-running adds only the new prefixes and leaves the tables alone.
    created = bigquery.get(f"datasets/{dataset}/tables/sts_job")["creationTime"]
    migration.prefix_file.write_text(json.dumps(migration.prefixes))
    tool("sts-prepare-tables", *args)
    assert bigquery.get(f"datasets/{dataset}/tables/sts_job")["creationTime"] == created
    rows = bigquery.query(f"SELECT prefix, status, job_name FROM `{PROJECT}.{dataset}.sts_job`")
    assert sorted(r["prefix"] for r in rows) == sorted(migration.prefixes)
    assert {(r["status"], r["job_name"]) for r in rows} == {("waiting", None)}

    # Loaded rows can be updated at once: DML only, no streaming inserts.
    assert "insertAll" not in bigquery.requests_logged()
    bigquery.query(
        f"UPDATE `{PROJECT}.{dataset}.sts_job` SET status = 'paused' WHERE prefix = 'data/p00/'"
    )
    rows = bigquery.query(
        f"SELECT status FROM `{PROJECT}.{dataset}.sts_job` WHERE prefix = 'data/p00/'"
    )
    assert rows == [{"status": "paused"}]


def test_manager_records_a_failure_the_readme_query_finds(
    bigquery: BigQuery, dataset: str, migration: Migration
) -> None:
    migration.prefix_file.write_text(json.dumps(migration.prefixes))
    args = bq_args(migration, dataset)
    tool(
        "sts-prepare-tables",
        *bq_state_args(dataset),
        "--job-prefix-source-file",
        str(migration.prefix_file),
    )
    migration.set_faults(fail_objects_matching="data/p01/*")

    result = tool(
        "sts-job-manager",
        *args,
        "--sleep-timeout",
        "0.2",
        "--job-interval",
        "0.2",
        "--metrics-interval",
        "0.2",
        "--no-retry-on-job-error",
        "--exit-when-done",
        timeout=240,
        check=False,
    )
    assert result.returncode == 4, result.stderr
    assert "finished with 1 prefixes in error" in result.stderr

    jobs = bigquery.query(f"SELECT prefix, status, job_name FROM `{PROJECT}.{dataset}.sts_job`")
    statuses = {row["prefix"]: row["status"] for row in jobs}
    assert statuses == {p: ("error" if p == "data/p01/" else "done") for p in migration.prefixes}
    assert all(row["job_name"].startswith("transferOperations/") for row in jobs)
    migration.assert_copied(skip=("data/p01/",))

    # The original README's debugging query, on our dataset.
    failed = bigquery.query(
        f"SELECT * FROM `{PROJECT}.{dataset}.sts_job_history` WHERE status = 'error'"
    )
    assert [row["prefix"] for row in failed] == ["data/p01/"]
    results = json.loads(failed[0]["operation_results"])
    assert results["status"] == "FAILED"
    urls = [
        entry["url"]
        for breakdown in results["errorBreakdowns"]
        for entry in breakdown.get("errorLogEntries", [])
    ]
    assert urls, results["errorBreakdowns"]
    assert all(url.startswith("gs://migration-source/data/p01/") for url in urls), urls
    assert int(failed[0]["timestamp"]) > 0
    done = bigquery.query(
        f"SELECT prefix FROM `{PROJECT}.{dataset}.sts_job_history` WHERE status = 'done'"
    )
    assert sorted(r["prefix"] for r in done) == sorted(set(migration.prefixes) - {"data/p01/"})


def test_a_table_name_with_sql_in_it_is_refused_before_any_request(
    migration: Migration, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A socket that listens and never answers: a tool that tried to reach
    # BigQuery would leave a connection in its backlog.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"127.0.0.1:{listener.getsockname()[1]}")
    migration.prefix_file.write_text(json.dumps(migration.prefixes))
    commands = {
        "sts-prepare-tables": ["--job-prefix-source-file", str(migration.prefix_file)],
        "sts-job-manager": [*migration.transfer_args(), "--sleep-timeout", "1"],
    }
    for name, value in [("--job-table", "sts_job; DROP TABLE x"), ("--dataset", "a.b")]:
        for command, extra in commands.items():
            result = tool(
                command,
                *bq_state_args("data_migration"),
                name,
                value,
                *extra,
                check=False,
            )
            assert result.returncode == 2, "bad input exits 2"
            expected = f"'{value}' is not a plain table name or dataset name"
            assert expected in result.stderr, result.stderr
            assert "could not be reached" not in result.stderr
            assert "Traceback" not in result.stderr
    try:
        connection, _ = listener.accept()
        connection.close()
        raise AssertionError("a tool connected to BigQuery before refusing the name")
    except BlockingIOError:
        pass  # nobody connected
    finally:
        listener.close()


def lease_holder(bigquery: BigQuery, dataset: str) -> str | None:
    """The lease row's holder, or None before the lease table exists."""
    try:
        rows = bigquery.query(f"SELECT holder FROM `{PROJECT}.{dataset}.sts_job_lease`")
    except AssertionError:
        return None
    return rows[0]["holder"] if rows else None


def test_one_manager_per_bigquery_table(
    bigquery: BigQuery, dataset: str, migration: Migration
) -> None:
    migration.prefix_file.write_text(json.dumps(migration.prefixes))
    backend = bq_args(migration, dataset)
    prefixes = ["--job-prefix-source-file", str(migration.prefix_file)]
    tool("sts-prepare-tables", *bq_state_args(dataset), *prefixes)
    args = [*backend, *FAST, "--lease-seconds", "4"]
    migration.set_faults(bytes_per_second=1000)
    first = subprocess.Popen([str(BIN / "sts-job-manager"), *args], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while f":{first.pid}:" not in (lease_holder(bigquery, dataset) or ""):
            assert first.poll() is None and time.monotonic() < deadline, "no lease taken"
            time.sleep(0.2)
        second = tool("sts-job-manager", *args, "--exit-when-done", check=False)
        assert second.returncode == 3, second.stderr
        assert "another sts-job-manager" in second.stderr, second.stderr
        assert f":{first.pid}:" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    # Killed on this machine: its lease is taken over at once, not after 4 s.
    migration.set_faults()
    takeover = tool("sts-job-manager", *args, "--exit-when-done", timeout=240)
    assert "every prefix is finished" in takeover.stderr
    assert lease_holder(bigquery, dataset) == "", "a clean exit gives the lease up"
    statuses = bigquery.query(f"SELECT DISTINCT status FROM `{PROJECT}.{dataset}.sts_job`")
    assert statuses == [{"status": "done"}]
    migration.assert_copied()

    # A manager on another machine: refused until its lease expires (by
    # BigQuery's clock), then taken over.
    bigquery.query(
        f"UPDATE `{PROJECT}.{dataset}.sts_job_lease` SET holder = 'other-host:7:7', "
        "until = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 3 SECOND) WHERE TRUE"
    )
    refused = tool("sts-job-manager", *args, "--exit-when-done", check=False)
    assert refused.returncode == 3, refused.stderr
    assert "other-host:7:7" in refused.stderr, refused.stderr
    time.sleep(3.5)
    tool("sts-job-manager", *args, "--exit-when-done")
    assert lease_holder(bigquery, dataset) == ""


class FaultyProxy:
    """Forwards HTTP to bqemulator on 127.0.0.1, answering a share of the
    requests with BigQuery's 503 or 429 instead: half of them before the
    request reaches the emulator, half after it ran (the answer is lost, so
    a retried statement must be safe to run again)."""

    def __init__(self, upstream: str, rate: float, seed: int) -> None:
        self.counts = {"forwarded": 0, "refused": 0, "lost": 0}
        rng = random.Random(seed)
        lock = self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def fault(self) -> None:
                code, reason, state = rng.choice(
                    [
                        (503, "backendError", "UNAVAILABLE"),
                        (429, "rateLimitExceeded", "RESOURCE_EXHAUSTED"),
                    ]
                )
                error = {"code": code, "message": "injected", "status": state}
                error["errors"] = [{"reason": reason, "message": "injected", "domain": "global"}]
                self.answer(code, json.dumps({"error": error}).encode(), "application/json")

            def relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    roll = rng.random()
                if roll < rate / 2:
                    proxy.count("refused")
                    return self.fault()
                connection = http.client.HTTPConnection(upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(self.command, self.path, body or None, headers)
                response = connection.getresponse()
                payload = response.read()
                connection.close()
                if roll < rate:
                    proxy.count("lost")
                    return self.fault()
                proxy.count("forwarded")
                self.answer(
                    response.status, payload, response.getheader("Content-Type") or "text/plain"
                )

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, kind: str) -> None:
        with self.lock:
            self.counts[kind] += 1

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_migration_completes_with_20_percent_bigquery_faults(
    bigquery: BigQuery, dataset: str, migration: Migration, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FaultyProxy(bigquery.host, rate=0.2, seed=6)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", proxy.host)
    try:
        migration.prefix_file.write_text(json.dumps(migration.prefixes))
        backend = bq_args(migration, dataset)
        prefixes = ["--job-prefix-source-file", str(migration.prefix_file)]
        tool("sts-prepare-tables", *bq_state_args(dataset), *prefixes)
        result = tool("sts-job-manager", *backend, *FAST, "--exit-when-done", timeout=600)
    finally:
        proxy.stop()
    print("requests through the proxy:", proxy.counts)
    assert "every prefix is finished" in result.stderr
    assert "retrying" in result.stderr, "no fault reached the manager"
    assert proxy.counts["refused"] >= 3 and proxy.counts["lost"] >= 3, proxy.counts
    assert proxy.counts["forwarded"] > 4 * (proxy.counts["refused"] + proxy.counts["lost"]) / 2

    jobs = bigquery.query(f"SELECT prefix, status FROM `{PROJECT}.{dataset}.sts_job`")
    assert sorted(row["prefix"] for row in jobs) == sorted(migration.prefixes)
    assert {row["status"] for row in jobs} == {"done"}
    done = bigquery.query(
        f"SELECT DISTINCT prefix FROM `{PROJECT}.{dataset}.sts_job_history` WHERE status = 'done'"
    )
    assert sorted(row["prefix"] for row in done) == sorted(migration.prefixes)
    migration.assert_copied()


def test_kill_9_loop_with_the_bigquery_store(
    bigquery: BigQuery, dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migration = make_migration(tmp_path, prefixes=8, files_per_prefix=4, size=3000)
    migration.prefix_file.write_text(json.dumps(migration.prefixes))
    backend = [*bq_state_args(dataset), "--transfer", "sts"]
    prefixes = ["--job-prefix-source-file", str(migration.prefix_file)]
    tool("sts-prepare-tables", *bq_state_args(dataset), *prefixes)
    emulator = Emulator(migration.root, "--bytes-per-second", "2500")
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    args = [str(BIN / "sts-job-manager"), *backend, "--max-concurrent-jobs", "4", *FAST]
    rng = random.Random(4)
    try:
        for _ in range(10):
            manager = subprocess.Popen(args, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 2.5))
            assert manager.poll() is None, "the manager stopped by itself"
            manager.send_signal(signal.SIGKILL)
            manager.wait()
        # Restarted at once: the dead manager's lease is taken over.
        final = subprocess.run(
            [*args, "--exit-when-done"], capture_output=True, text=True, timeout=400
        )
        assert final.returncode == 0, final.stderr
    finally:
        emulator.stop()

    jobs = bigquery.query(f"SELECT prefix, status FROM `{PROJECT}.{dataset}.sts_job`")
    assert {row["prefix"]: row["status"] for row in jobs} == dict.fromkeys(
        migration.prefixes, "done"
    )
    migration.assert_copied()
    done = bigquery.query(
        f"SELECT DISTINCT prefix FROM `{PROJECT}.{dataset}.sts_job_history` WHERE status = 'done'"
    )
    assert sorted(row["prefix"] for row in done) == sorted(migration.prefixes)
    migration.assert_no_overlapping_operations()


def test_status_reads_snapshots_from_bigquery(
    bigquery: BigQuery, dataset: str, migration: Migration
) -> None:
    import sts_job_manager as sjm

    migration.prefix_file.write_text(json.dumps(migration.prefixes))
    args = bq_state_args(dataset)
    tool("sts-prepare-tables", *args, "--job-prefix-source-file", str(migration.prefix_file))
    migration.set_faults(bytes_per_second=1000)
    options = {
        "state": "bigquery",
        "project": PROJECT,
        "dataset": dataset,
        "transfer": f"local:{migration.root}",
        "sleep_timeout": 0.2,
        "job_interval": 0.2,
        "metrics_interval": 0.2,
    }
    manager = sjm.Manager(options)
    manager.run_once()
    time.sleep(1)
    manager.run_once()  # a second snapshot of the running prefix
    early = json.loads(tool("sts-status", *args, "--json").stdout)
    assert early["prefixes"]["total"] == len(migration.prefixes)
    assert early["prefixes"]["done"] == 0
    assert early["prefixes"]["running"] >= 1
    assert early["unlisted_prefixes"] >= early["prefixes"]["waiting"] > 0
    assert early["eta"]["seconds"] is None, early["eta"]
    migration.set_faults()
    manager.run_until_done(timeout=240)
    final = json.loads(tool("sts-status", *args, "--json").stdout)
    assert final["prefixes"]["done"] == len(migration.prefixes)
    assert final["bytes"]["found"] == sum(len(d) for d in migration.objects.values())
    assert final["bytes"]["copied"] == final["bytes"]["found"]
    assert final["eta"]["seconds"] == 0


def test_doctor_checks_the_dataset_and_its_location(
    bigquery: BigQuery, dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migration = make_migration(tmp_path)
    sts = Emulator(migration.root)
    try:
        monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", sts.host)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", sts.host)
        args = [*bq_state_args(dataset), "--dataset-location", "US"]

        def doctor(*extra: str):
            return tool("sts-doctor", *args, *extra, check=False)

        missing = doctor()
        assert missing.returncode == 1, missing.stdout + missing.stderr
        assert f"FAIL dataset {dataset}: does not exist" in missing.stdout
        assert f"sts-prepare-tables --state bigquery --project {PROJECT}" in missing.stdout
        assert "API bigquery.googleapis.com: enabled" in missing.stdout
        tool("sts-prepare-tables", *args)
        ready = doctor()
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert f"ok   dataset {dataset}: exists" in ready.stdout
        elsewhere = doctor("--dataset-location", "EU")
        assert elsewhere.returncode == 1
        assert "pass --dataset-location" in elsewhere.stdout
    finally:
        sts.stop()


def test_failed_objects_rerun_by_manifest_with_the_bigquery_store(
    bigquery: BigQuery, dataset: str, migration: Migration
) -> None:
    import sts_job_manager as sjm

    (migration.root / "manifests").mkdir()
    options = {
        **migration.options(no_retry_on_job_error=True),
        "state": "bigquery",
        "project": PROJECT,
        "dataset": dataset,
    }
    sjm.prepare_tables(options, prefixes=migration.prefixes)
    migration.set_faults(fail_objects_matching="*file-1.bin", error_code="UNAVAILABLE")
    sjm.Manager(options).run_until_done(timeout=240)
    migration.set_faults()
    result = sjm.requeue(options, failed_objects=True, manifest_location="gs://manifests/m/")
    assert sorted(result["requeued"]) == sorted(migration.prefixes)
    table = f"`{PROJECT}.{dataset}.sts_job_manifests`"
    pending = bigquery.query(f"SELECT prefix, location, objects FROM {table}")
    assert sorted(r["prefix"] for r in pending) == sorted(migration.prefixes)
    assert {int(r["objects"]) for r in pending} == {1}
    summary = sjm.Manager(options).run_until_done(timeout=240)
    assert summary["counts"]["done"] == len(migration.prefixes)
    migration.assert_copied()
    # The manager's progress is the figures sts-status reports (the quiet
    # prefixes summed by BigQuery): a manifest run's found (one object)
    # does not replace what its prefix holds.
    report = sjm.State(options).status()
    progress = summary["progress"]
    for kind in ("objects", "bytes"):
        for name in ("found", "copied", "skipped", "failed"):
            assert progress[f"{kind}_{name}"] == report[kind][name], (kind, name)
    assert progress["objects_found"] == progress["objects_copied"] == len(migration.objects)
    for op in migration.operations():
        if "transferManifest" in op["transferSpec"]:
            assert int(op["counters"]["objectsFoundFromSource"]) == 1
    # Each manifest run that succeeded dropped its manifest; a plain
    # requeue drops one by prefix.
    assert bigquery.query(f"SELECT prefix FROM {table}") == []
    sjm.requeue(options, prefixes=[migration.prefixes[0]])
    assert bigquery.query(f"SELECT prefix FROM {table}") == []


def test_a_requeue_crashed_at_every_point_on_bigquery(
    bigquery: BigQuery, dataset: str, tmp_path: Path
) -> None:
    """`STS_JOB_MANAGER_CRASH_AT=N` (README, "Crash points") before each of
    a requeue's write requests in turn: BigQuery writes history first, so a
    crash leaves a job row never ahead of its history, and a rerun
    finishes the requeue."""
    prefixes = ["data/p00/", "data/p01/"]
    listed = tmp_path / "prefixes.json"
    listed.write_text(json.dumps(prefixes))

    def rows(name: str) -> tuple[dict[str, str], set[str]]:
        jobs = bigquery.query(f"SELECT prefix, status FROM `{PROJECT}.{name}.sts_job`")
        queued = bigquery.query(
            f"SELECT prefix FROM `{PROJECT}.{name}.sts_job_history` WHERE status = 'waiting'"
        )
        return {r["prefix"]: r["status"] for r in jobs}, {r["prefix"] for r in queued}

    crashed_at = 0
    for n in range(1, 50):
        name = f"{dataset}_{n}"
        state = bq_state_args(name)
        tool("sts-prepare-tables", *state, "--job-prefix-source-file", str(listed))
        table = f"`{PROJECT}.{name}.sts_job`"
        bigquery.query(
            f"UPDATE {table} SET status = 'done', job_name = 'transferOperations/x' WHERE true"
        )
        args = [str(BIN / "sts-requeue"), *state, "--job-prefix-source-file", str(listed)]
        crashed = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "STS_JOB_MANAGER_CRASH_AT": str(n)},
        )

        if crashed.returncode != -signal.SIGABRT:
            assert crashed.returncode == 0, crashed.stderr
            break
        crashed_at = n
        jobs, queued = rows(name)
        for prefix, status in jobs.items():
            assert status == "done" or prefix in queued, f"{prefix} requeued, no history row"
        rerun = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        jobs, queued = rows(name)
        assert jobs == dict.fromkeys(prefixes, "waiting")
        assert queued == set(prefixes)
    assert crashed_at >= 2, f"only {crashed_at} crash points in a requeue"
