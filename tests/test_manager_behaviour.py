"""Manager rules observed from the local engine's own record."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import BIN, Migration, make_migration, sql, tool


def run_until_done(manager: sjm.Manager, limit: float = 60) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        summary = manager.run_once()
        if summary["done"]:
            return summary
        time.sleep(0.2)
    raise AssertionError(f"not done after {limit} s: {summary}")


def test_ramp_up_doubles_and_never_exceeds_the_maximum(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=12, files_per_prefix=2, size=4000)
    migration.prepare()
    # Slow copies keep every started operation in progress for many cycles.
    migration.set_faults(bytes_per_second=200)
    manager = sjm.Manager(migration.options(max_concurrent_jobs=7))
    started_per_cycle, active_per_cycle = [], []
    for _ in range(5):
        summary = manager.run_once()
        started_per_cycle.append(len(summary["started"]))
        active_per_cycle.append(migration.active_operations())
        assert summary["counts"]["running"] == active_per_cycle[-1]
    assert started_per_cycle == [1, 2, 4, 0, 0]
    assert active_per_cycle == [1, 3, 7, 7, 7]
    assert max(active_per_cycle) <= 7


def test_failed_object_puts_prefix_in_error_and_no_retry_keeps_it(migration: Migration) -> None:
    broken = migration.source / "data/p02/nested/broken.bin"
    broken.symlink_to(migration.root / "does-not-exist")
    migration.prepare()
    result = tool(
        "sts-job-manager",
        *migration.backend_args(),
        "--sleep-timeout",
        "0.2",
        "--job-interval",
        "0.2",
        "--metrics-interval",
        "0.2",
        "--exit-when-done",
        "--no-retry-on-job-error",
        check=False,
    )
    jobs = migration.jobs()
    assert jobs["data/p02/"][0] == "error"
    assert all(status == "done" for prefix, (status, _) in jobs.items() if prefix != "data/p02/")
    error_rows = [row for row in migration.history() if row[1] == "error"]
    assert [row[0] for row in error_rows] == ["data/p02/"]
    results = json.loads(error_rows[0][3])
    assert results["status"] == "FAILED"
    (breakdown,) = results["errorBreakdowns"]
    assert breakdown["errorCode"] == "NOT_FOUND"
    assert breakdown["errorCount"] == "1"
    assert breakdown["errorLogEntries"][0]["url"] == (
        "gs://migration-source/data/p02/nested/broken.bin"
    )
    # The exit code and the last line say the migration did not fully succeed.
    assert result.returncode == 4, result.stderr
    assert "finished with 1 prefixes in error" in result.stderr
    assert '"data/p02/" NOT_FOUND' in result.stderr
    # The failure is logged once at ERROR, with the prefix, code and a sample.
    failure_lines = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(failure_lines) == 1, result.stderr
    assert "data/p02/" in failure_lines[0] and "NOT_FOUND x1" in failure_lines[0]
    assert "gs://migration-source/data/p02/nested/broken.bin" in failure_lines[0]
    # Not retried: one operation for the failed prefix.
    ops = [
        op
        for op in migration.operations()
        if op["transferSpec"]["objectConditions"]["includePrefixes"] == ["data/p02/"]
    ]
    assert len(ops) == 1
    migration.assert_copied()


def test_failed_prefix_is_retried_until_it_succeeds(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(
        fail_objects_matching="data/p01/*/file-3.bin", error_code="PERMISSION_DENIED"
    )
    manager = sjm.Manager(migration.options())
    deadline = time.monotonic() + 60
    # A cycle may sync the failure and retry it at once, so watch the history.
    while not any(row[:2] == ("data/p01/", "error") for row in migration.history()):
        assert time.monotonic() < deadline, "the prefix never failed"
        manager.run_once()
        time.sleep(0.1)
    migration.set_faults()
    run_until_done(manager)
    assert {status for status, _ in migration.jobs().values()} == {"done"}
    ops = [
        op
        for op in migration.operations()
        if op["transferSpec"]["objectConditions"]["includePrefixes"] == ["data/p01/"]
    ]
    assert len(ops) >= 2
    assert ops[0]["status"] == "FAILED" and ops[-1]["status"] == "SUCCESS"
    # The retry created no job: it ran a reusable one again.
    assert all("/sts-jm-pool-" in op["transferJobName"] for op in ops)
    assert len(migration.engine_jobs()) <= 20, "no job per attempt"
    statuses = [row[1] for row in migration.history() if row[0] == "data/p01/"]
    assert statuses.index("error") < len(statuses) - 1 - statuses[::-1].index("done")
    migration.assert_copied()


def test_pause_all_from_another_process_then_manager_resumes(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=3000)
    manager = subprocess.Popen(
        [
            str(BIN / "sts-job-manager"),
            *migration.backend_args(),
            "--sleep-timeout",
            "0.3",
            "--job-interval",
            "3",
            "--metrics-interval",
            "0.3",
            "--max-concurrent-jobs",
            "3",
            "--exit-when-done",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        running: set[str] = set()
        while not running:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            running = {op["name"] for op in migration.operations() if op["status"] == "IN_PROGRESS"}
        result = tool("sts-pause-all-jobs", *migration.transfer_args())
        paused = int(result.stdout.split()[1])
        assert paused >= len(running) >= 1
        assert running <= {op["name"] for op in migration.operations() if op["status"] == "PAUSED"}
        assert manager.wait(timeout=120) == 0
    finally:
        manager.kill()
        manager.wait()
    assert {status for status, _ in migration.jobs().values()} == {"done"}
    paused_prefixes = {row[0] for row in migration.history() if row[1] == "paused"}
    assert paused_prefixes, "the manager never saw the paused operations"
    # Resumed, not restarted: still one operation per prefix.
    assert len(migration.operations()) == len(migration.prefixes)
    migration.assert_copied()


def _insert_engine_job(root: Path, name: str, schedule: dict, op_status: str) -> None:
    """Adds a job made elsewhere (not by the manager) straight into the engine."""
    spec = {
        "gcsDataSource": {"bucketName": "migration-source"},
        "gcsDataSink": {"bucketName": "migration-destination"},
    }
    job = {
        "name": name,
        "projectId": "local-project",
        "transferSpec": spec,
        "schedule": schedule,
        "status": "ENABLED",
    }
    op = {
        "name": f"transferOperations/{name.split('/')[1]}-1",
        "projectId": "local-project",
        "transferSpec": spec,
        "status": op_status,
        "transferJobName": name,
        "startTime": "2026-01-01T00:00:00Z",
    }
    database = root / ".sts-engine" / "engine.db"
    sql(
        database,
        "INSERT INTO jobs (name, project_id, status, body) VALUES (?, ?, 'ENABLED', ?)",
        (name, "local-project", json.dumps(job)),
    )
    sql(
        database,
        "INSERT INTO operations (name, job_name, project_id, status, end_time, body)"
        " VALUES (?, ?, 'local-project', ?, '2026-01-01T01:00:00Z', ?)",
        (op["name"], name, op_status, json.dumps(op)),
    )


def test_remove_successful_one_time_jobs_removes_exactly_those(migration: Migration) -> None:
    migration.set_faults(fail_objects_matching="data/p03/*")
    migration.prepare()
    # One-time jobs, one per prefix, as the original made them.
    tool(
        "sts-job-manager",
        *migration.backend_args(),
        "--no-job-reuse",
        "--sleep-timeout",
        "0.2",
        "--job-interval",
        "0.2",
        "--metrics-interval",
        "0.2",
        "--exit-when-done",
        "--no-retry-on-job-error",
        check=False,
    )
    day = {"year": 2026, "month": 1, "day": 1}
    recurring = {"scheduleStartDate": day, "scheduleEndDate": {**day, "day": 31}}
    _insert_engine_job(migration.root, "transferJobs/sts-jm-recurring-1", recurring, "SUCCESS")

    result = tool("sts-remove-successful-one-time-jobs", *migration.transfer_args())
    assert result.stdout.startswith("Removed 5 ")
    by_status: dict[str, set[str]] = {}
    for job in migration.engine_jobs():
        by_status.setdefault(job["status"], set()).add(job["name"])
    failed_job = {
        op["transferJobName"] for op in migration.operations() if op["status"] == "FAILED"
    }
    assert by_status["ENABLED"] == failed_job | {"transferJobs/sts-jm-recurring-1"}
    assert len(by_status["DELETED"]) == 5
    # Running it again finds nothing more to remove.
    again = tool("sts-remove-successful-one-time-jobs", *migration.transfer_args())
    assert again.stdout.startswith("Removed 0 ")
    # Deleted jobs' operations are ignored by the manager; state stays as it was.
    sjm.Manager(migration.options(no_retry_on_job_error=True)).run_once()
    assert sum(status == "done" for status, _ in migration.jobs().values()) == 5


def test_unknown_operation_status_never_stops_the_manager(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=500)
    manager = sjm.Manager(migration.options(max_concurrent_jobs=1))
    manager.run_once()
    (op,) = migration.operations()
    engine = migration.root / ".sts-engine" / "engine.db"
    sql(engine, "UPDATE operations SET status = 'TELEPORTING' WHERE name = ?", (op["name"],))
    summary = manager.run_once()
    prefix = op["transferSpec"]["objectConditions"]["includePrefixes"][0]
    assert migration.jobs()[prefix][0] == "running", "an unknown status keeps the prefix's status"
    assert summary["counts"]["running"] == 1
    sql(engine, "UPDATE operations SET status = 'SUCCESS' WHERE name = ?", (op["name"],))
    manager.run_once()
    assert migration.jobs()[prefix][0] == "done"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"max_concurent_jobs": 3}, "max_concurent_jobs"),
        ({"sleep_timeout": 10, "job_interval": 5}, "job-interval"),
        ({"state": "postgres:x"}, "state"),
    ],
)
def test_bad_options_raise_options_error(options: dict, expected: str) -> None:
    with pytest.raises(sjm.OptionsError, match=expected):
        sjm.Options(**options)


def test_missing_tables_raise_state_error(tmp_path: Path) -> None:
    (tmp_path / "buckets").mkdir()
    with pytest.raises(sjm.StateError, match="sts-prepare-tables"):
        sjm.Manager(state=f"sqlite:{tmp_path / 's.db'}", transfer=f"local:{tmp_path / 'buckets'}")
