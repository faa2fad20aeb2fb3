"""A cycle costs what is in flight: the STS list requests of a steady-state
sync do not grow with finished prefixes or with retries, and what the
steady state does not list is found by the periodic full reconcile."""

from __future__ import annotations

import datetime
import json
import time
import urllib.request
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import (
    FAST,
    Emulator,
    Migration,
    gapic_client,
    make_migration,
    original_tool_start,
    sql,
    tool,
)

PROJECT = "scale-project"


def requests_served(emulator: Emulator) -> int:
    with urllib.request.urlopen(f"{emulator.url}/_emulator/stats", timeout=10) as response:
        return int(json.loads(response.read())["requests"])


def list_requests(emulator: Emulator) -> int:
    """List requests the emulator admitted (its strict layer counts them by
    the discovery document's method id)."""
    methods = emulator.stats()["methods"]
    return sum(n for method, n in methods.items() if method.endswith(".list"))


def add_finished_history(
    migration: Migration, finished: int, retries: int, just_now: bool = False
) -> None:
    """`finished` prefixes done long ago (or `just_now`: ended in the last
    minute, started over the 50 minutes before, 200 at a time as STS runs
    them), each with `retries` failed operations before its successful one,
    straight into state and engine."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def stamp(t: datetime.datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    old = [f"old/{i:05d}/" for i in range(finished)]
    sql(
        migration.state,
        "INSERT INTO sts_job (prefix, status, job_name, last_updated)"
        " VALUES (?, 'done', ?, '2026-01-02T00:00:00.000000Z')",
        [(p, f"transferOperations/old-{i}-{retries + 1}") for i, p in enumerate(old)],
        many=True,
    )
    operations = []
    for i, prefix in enumerate(old):
        job = f"transferJobs/sts-jm-old-{i}"
        for attempt in range(1, retries + 2):
            status = "SUCCESS" if attempt == retries + 1 else "FAILED"
            op = {
                "name": f"transferOperations/old-{i}-{attempt}",
                "projectId": PROJECT,
                "transferSpec": {
                    "gcsDataSource": {"bucketName": migration.source_bucket},
                    "gcsDataSink": {"bucketName": migration.destination_bucket},
                    "objectConditions": {"includePrefixes": [prefix]},
                },
                "status": status,
                "transferJobName": job,
                "startTime": f"2026-01-01T00:{attempt:02d}:00Z",
            }
            end = "2026-01-01T01:00:00Z"
            if just_now:
                started = now - datetime.timedelta(minutes=50) * (1 - i / finished)
                op["startTime"] = stamp(started - datetime.timedelta(seconds=retries - attempt))
                end = stamp(now - datetime.timedelta(seconds=30 * (1 - i / finished)))
            operations.append((op["name"], job, status, end, json.dumps(op)))
    sql(
        migration.root / ".sts-engine" / "engine.db",
        "INSERT INTO operations (name, job_name, project_id, status, end_time, body)"
        f" VALUES (?, ?, '{PROJECT}', ?, ?, ?)",
        operations,
        many=True,
    )


def steady_sync_requests(
    base: Path, finished: int, retries: int, patience: float = 60, just_now: bool = False
) -> int:
    """STS requests of one steady-state `run_once` (two syncs, no start)
    while 20 prefixes run, after `finished` prefixes finished earlier (the
    list requests among them, with `just_now`)."""
    migration = make_migration(base, prefixes=20, files_per_prefix=2, size=20_000)
    migration.prepare()
    emulator = Emulator(migration.root)
    try:
        add_finished_history(migration, finished, retries, just_now)
        emulator.set_faults(bytes_per_second=1000)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
            manager = sjm.Manager(
                migration.options(
                    transfer="sts", project=PROJECT, max_concurrent_jobs=20, reconcile_interval=3600
                )
            )
            deadline = time.monotonic() + patience
            while manager.run_once()["counts"]["running"] < 20:
                assert time.monotonic() < deadline, "20 prefixes never ran at once"
            before = list_requests(emulator) if just_now else requests_served(emulator)
            summary = manager.run_once()
            assert summary["counts"] == {
                "done": finished,
                "error": 0,
                "paused": 0,
                "running": 20,
                "waiting": 0,
            }
            assert not summary["reconciled"] and summary["started"] == []
            after = list_requests(emulator) if just_now else requests_served(emulator)
            return after - before
    finally:
        emulator.stop()


def test_list_requests_per_sync_do_not_grow_with_history(tmp_path: Path) -> None:
    small = steady_sync_requests(tmp_path / "a", finished=1000, retries=0)
    large = steady_sync_requests(tmp_path / "b", finished=3000, retries=0)
    retried = steady_sync_requests(tmp_path / "c", finished=3000, retries=2)
    print(f"requests per steady run_once (2 syncs): {small}, {large}, {retried}")
    assert small == large == retried
    # The README's figure: 3 list requests per steady sync with 20 running.
    assert small == 2 * 3


@pytest.mark.parametrize("finished", [1000, 10_000])
def test_list_requests_per_sync_right_after_many_prefixes_finished(
    tmp_path: Path, finished: int
) -> None:
    """Right after they finished, the operations of finished prefixes are not
    listed again and again: a steady sync lists operations created since the
    newest it has seen (STS's clock), not since this host's clock less a
    margin."""
    lists = steady_sync_requests(tmp_path, finished=finished, retries=0, just_now=True)
    print(f"list requests per steady run_once (2 syncs) right after {finished} finished: {lists}")
    assert lists <= 2 * 5, "at most 5 list requests per sync"


def test_an_operation_started_elsewhere_is_found_by_the_full_reconcile(
    migration: Migration, monkeypatch: pytest.MonkeyPatch
) -> None:
    migration.prepare()
    emulator = Emulator(migration.root)
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    client = gapic_client(emulator)
    outside = migration.prefixes[-1]
    try:
        emulator.set_faults(bytes_per_second=500)

        def manager(reconcile_interval: float) -> sjm.Manager:
            return sjm.Manager(
                migration.options(
                    transfer="sts",
                    project=PROJECT,
                    max_concurrent_jobs=1,
                    reconcile_interval=reconcile_interval,
                )
            )

        # An hour between full reconciles: the steady sync is steady
        # however slow this machine is.
        steady_manager = manager(3600)
        first = steady_manager.run_once()
        assert first["reconciled"] and first["counts"]["running"] == 1
        job_name = original_tool_start(client, migration, PROJECT, outside)
        steady = steady_manager.run_once()
        assert not steady["reconciled"]
        assert migration.jobs()[outside] == ("waiting", None), "not listed in steady state"
        # A one-second interval: the full reconcile comes after the one at
        # start, counted in cycles (each cycle waits 0.2 s, so 1 s has gone
        # by after 5 of them on any machine).
        periodic = manager(1)
        assert periodic.run_once()["reconciled"], "a full reconcile at start"
        cycles = 1
        while True:
            time.sleep(0.2)
            cycles += 1
            full = periodic.run_once()
            if full["reconciled"]:
                break
            assert cycles <= 20, "no second full reconcile within 20 cycles"
        status, name = migration.jobs()[outside]
        ops = [op for op in migration.operations() if op["transferJobName"] == job_name]
        assert status == "running" and [op["name"] for op in ops] == [name]
        ours = [
            op
            for op in migration.operations()
            if op["transferJobName"].startswith("transferJobs/sts-jm-")
            and op["transferSpec"]["objectConditions"]["includePrefixes"] == [outside]
        ]
        assert ours == [], "followed, not started a second time"
    finally:
        client.transport.close()
        emulator.stop()


def test_job_reuse_carries_a_migration_past_the_daily_create_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migration = make_migration(tmp_path, prefixes=200, files_per_prefix=1, size=200)
    migration.prepare()
    emulator = Emulator(migration.root, "--quota", "create_per_day=20")
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    try:
        result = tool(
            "sts-job-manager",
            "--state",
            f"sqlite:{migration.state}",
            "--transfer",
            "sts",
            "--project",
            PROJECT,
            *FAST,
            "--max-concurrent-jobs",
            "10",
            "--exit-when-done",
            check=False,
            timeout=600,
        )
    finally:
        emulator.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert {s for s, _ in migration.jobs().values()} == {"done"}
    migration.assert_copied()
    migration.assert_no_overlapping_operations()
    ops = migration.operations()
    prefixes = [op["transferSpec"]["objectConditions"]["includePrefixes"][0] for op in ops]
    assert sorted(prefixes) == sorted(migration.prefixes), "every prefix copied exactly once"
    jobs = migration.engine_jobs()
    print(f"{len(jobs)} jobs created for {len(ops)} prefixes started")
    assert len(jobs) <= 20


def test_a_freed_slot_is_taken_at_the_next_sync(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=3, files_per_prefix=1, size=200)
    migration.prepare()
    # Job interval 60 s: the ramp stays at one slot for the whole test.
    result = tool(
        "sts-job-manager",
        *migration.backend_args(),
        "--sleep-timeout",
        "0.2",
        "--metrics-interval",
        "0.2",
        "--job-interval",
        "60",
        "--max-concurrent-jobs",
        "5",
        "--exit-when-done",
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    ops = sorted(migration.operations(), key=lambda op: op["startTime"])
    assert len(ops) == 3
    for earlier, later in zip(ops, ops[1:]):
        ended = datetime.datetime.fromisoformat(earlier["endTime"])
        started = datetime.datetime.fromisoformat(later["startTime"])
        assert started >= ended, "one slot: one operation at a time"
        assert (started - ended).total_seconds() < 30, "the slot waited for a job interval"
