"""The manager and the helper tools speaking STS REST to sts-emulator, and
the heartbeat going to a stand-in for Cloud Monitoring."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import Emulator, Migration, tool

PROJECT = "http-project"


@pytest.fixture
def sts(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    return emulator


def http_options(migration: Migration, **extra: object) -> dict[str, object]:
    return migration.options(transfer="sts", project=PROJECT, **extra)


def ops_for(migration: Migration, prefix: str) -> list[dict]:
    return [
        op
        for op in migration.operations()
        if op["transferSpec"]["objectConditions"]["includePrefixes"] == [prefix]
    ]


def cycle_until(manager: sjm.Manager, condition, limit: float = 90) -> dict:
    deadline = time.monotonic() + limit
    while True:
        summary = manager.run_once()
        if condition(summary):
            return summary
        assert time.monotonic() < deadline, f"condition not met: {summary}"
        time.sleep(0.2)


def cycle_after(manager: sjm.Manager, pause: float) -> dict:
    """A cycle after a pause, so the executor has time to report counters."""
    time.sleep(pause)
    return manager.run_once()


def test_migration_over_http_with_failures_and_api_faults(
    migration: Migration, sts: Emulator
) -> None:
    migration.prepare()
    sts.set_faults(fail_objects_matching="data/p01/*", api_error_rate=0.2)
    manager = sjm.Manager(http_options(migration))
    cycle_until(
        manager, lambda _: any(r[:2] == ("data/p01/", "error") for r in migration.history())
    )
    sts.set_faults(fail_objects_matching=None)
    summary = cycle_until(manager, lambda s: s["done"])
    assert summary["counts"]["done"] == len(migration.prefixes)
    migration.assert_copied()
    failed = ops_for(migration, "data/p01/")
    assert failed[0]["status"] == "FAILED" and failed[-1]["status"] == "SUCCESS"
    (breakdown,) = failed[0]["errorBreakdowns"]
    assert breakdown["errorCode"] == "PERMISSION_DENIED"
    assert breakdown["errorLogEntries"][0]["url"].startswith("gs://migration-source/data/p01/")
    for prefix in migration.prefixes:
        assert len([op for op in ops_for(migration, prefix) if op["status"] == "SUCCESS"]) == 1


def test_stalled_operation_is_detected_and_new_jobs_may_start(
    migration: Migration, sts: Emulator
) -> None:
    migration.prepare()
    sts.set_faults(freeze_counters=True)
    # Counters that have not moved for --stall-after (here 1 s) are a stall.
    strict = sjm.Manager(http_options(migration, max_concurrent_jobs=1, stall_after=1))
    summaries = [cycle_after(strict, 0.5) for _ in range(4)]
    assert summaries[-1]["stalled"] == ["data/p00/"]
    assert sum(len(s["started"]) for s in summaries) == 1, "a stalled job still counts as running"
    del strict

    lenient = sjm.Manager(
        http_options(
            migration, max_concurrent_jobs=1, allow_new_jobs_when_stalled=True, stall_after=1
        )
    )
    summaries = [cycle_after(lenient, 0.5) for _ in range(3)]
    assert "data/p00/" in summaries[-1]["stalled"]
    assert any(s["started"] for s in summaries), "stalled jobs do not count: a new job starts"
    assert migration.active_operations() == 2


def test_pause_all_and_remove_successful_over_http(migration: Migration, sts: Emulator) -> None:
    migration.prepare()
    sts.set_faults(bytes_per_second=500)
    manager = sjm.Manager(http_options(migration, max_concurrent_jobs=1))
    manager.run_once()
    args = ["--transfer", "sts", "--project", PROJECT]
    env_tool = tool("sts-pause-all-jobs", *args)
    assert env_tool.stdout.startswith("Paused 1 ")
    assert [op["status"] for op in migration.operations()] == ["PAUSED"]

    sts.set_faults(bytes_per_second=0)
    summary = cycle_until(manager, lambda s: s["done"])
    assert summary["counts"]["done"] == len(migration.prefixes)
    assert any(row[1] == "paused" for row in migration.history())
    assert len(migration.operations()) == len(migration.prefixes), "resumed, not restarted"

    # Reusable jobs are not one-time jobs: the cleanup leaves them alone.
    removed = tool("sts-remove-successful-one-time-jobs", *args)
    assert removed.stdout.startswith("Removed 0 ")
    jobs = migration.engine_jobs()
    assert jobs and all("/sts-jm-pool-" in job["name"] for job in jobs)
    assert {job["status"] for job in jobs} == {"ENABLED"}


def test_remove_successful_one_time_jobs_over_http(migration: Migration, sts: Emulator) -> None:
    migration.prepare()
    manager = sjm.Manager(http_options(migration, no_job_reuse=True))
    summary = cycle_until(manager, lambda s: s["done"])
    assert summary["counts"]["done"] == len(migration.prefixes)
    args = ["--transfer", "sts", "--project", PROJECT]
    removed = tool("sts-remove-successful-one-time-jobs", *args)
    assert removed.stdout.startswith(f"Removed {len(migration.prefixes)} ")
    assert {job["status"] for job in migration.engine_jobs()} == {"DELETED"}


@pytest.fixture
def monitoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """sts-emulator as Cloud Monitoring: strict (monitoring.v3's discovery
    document), and refusing a point written to a series within 5 s of its
    last, as Monitoring does."""
    root = tmp_path / "monitoring"
    root.mkdir()
    running = Emulator(root)
    monkeypatch.setenv("MONITORING_EMULATOR_HOST", running.host)
    yield running
    running.stop()


def test_heartbeat_publishes_every_status_and_stalled(
    migration: Migration, monitoring: Emulator
) -> None:
    migration.prepare()
    options = migration.options(publish_heartbeat=True, stackdriver_project="heartbeat-project")
    # A failed publish is an error of the cycle, not the end of it.
    monitoring.set_faults(api_error_rate=1.0, api_error_codes=[500])
    summary = sjm.Manager(options).run_once()
    assert any(error.startswith("heartbeat:") for error in summary["errors"])
    assert summary["counts"]["running"] == 1, "the cycle went on"
    monitoring.set_faults(api_error_rate=0.0)

    manager = sjm.Manager(options)
    started = time.monotonic()
    for _ in range(5):
        summary = manager.run_once()
        assert not summary["errors"], summary["errors"]
    elapsed = time.monotonic() - started
    # One point per series every 10 s however often the cycle runs
    # (Monitoring refuses a point within 5 s of the last of its series, and
    # the emulator refuses it too: no error above means none was refused).
    writes = monitoring.stats()["time_series"]
    assert 1 <= len(writes) <= 1 + int(elapsed // 10), (len(writes), elapsed)
    body = writes[0]
    points = {
        series["metric"]["type"]: int(series["points"][0]["value"]["int64Value"])
        for series in body["timeSeries"]
    }
    prefix = "custom.googleapis.com/sts_job_manager/"
    assert set(points) == {f"{prefix}status/{s}" for s in summary["counts"]} | {
        f"{prefix}metrics/stalled"
    }
    assert points[f"{prefix}metrics/stalled"] == 0
    statuses = [v for k, v in points.items() if "/status/" in k]
    assert sum(statuses) == len(migration.prefixes), points
    assert points[f"{prefix}status/waiting"] < len(migration.prefixes), "one had started"
    assert {s["resource"]["labels"]["project_id"] for s in body["timeSeries"]} == {
        "heartbeat-project"
    }


def test_two_migrations_between_the_same_buckets_share_no_job(
    migration: Migration, sts: Emulator
) -> None:
    """Two job tables, disjoint prefixes, the same two buckets: each manager
    keeps to its own pool of reusable jobs, and both finish."""
    import dataclasses

    half = len(migration.prefixes) // 2
    first = dataclasses.replace(migration, prefixes=migration.prefixes[:half])
    second = dataclasses.replace(
        migration,
        prefixes=migration.prefixes[half:],
        state=migration.state.with_name("second.db"),
    )
    for each in (first, second):
        each.prefix_file.write_text(json.dumps(each.prefixes))
        prefix_file = str(each.prefix_file)
        tool("sts-prepare-tables", *each.state_args(), "--job-prefix-source-file", prefix_file)
    sts.set_faults(bytes_per_second=8000)
    managers = [sjm.Manager(http_options(each, max_concurrent_jobs=3)) for each in (first, second)]
    deadline = time.monotonic() + 120
    finished = [False, False]
    while not all(finished):
        for i, manager in enumerate(managers):
            if not finished[i]:
                finished[i] = manager.run_once()["done"]
        assert time.monotonic() < deadline, "the two migrations did not finish"
        time.sleep(0.2)
    migration.assert_copied()
    ops = migration.operations()
    jobs_of = [
        {
            op["transferJobName"]
            for op in ops
            if op["transferSpec"]["objectConditions"]["includePrefixes"][0] in each.prefixes
        }
        for each in (first, second)
    ]
    assert jobs_of[0] and jobs_of[1]
    assert not jobs_of[0] & jobs_of[1], "a job was used by both migrations"
    # sts-status --pool shows each migration its own reusable jobs only.
    for each, used in zip((first, second), jobs_of):
        shown = tool(
            "sts-status",
            *each.state_args(),
            "--transfer",
            "sts",
            "--project",
            PROJECT,
            "--pool",
            "--json",
        )
        pool = {job["name"] for job in json.loads(shown.stdout)["pool"]}
        assert used <= pool, (used, pool)
        assert not pool & (jobs_of[0] | jobs_of[1]) - used
    for prefix in migration.prefixes:
        succeeded = [
            op
            for op in ops
            if op["transferSpec"]["objectConditions"]["includePrefixes"] == [prefix]
            and op["status"] == "SUCCESS"
        ]
        assert len(succeeded) == 1, prefix


def test_the_bucket_check_runs_over_rest_before_the_first_start(
    migration: Migration, sts: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With STORAGE_EMULATOR_HOST, the manager asks Cloud Storage (the
    emulator's JSON API) whether both buckets exist before it starts anything."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", sts.host)
    migration.prepare()
    manager = sjm.Manager(http_options(migration, source_bucket="no-such-source"))
    with pytest.raises(sjm.StsJobManagerError, match="gs://no-such-source"):
        manager.run_once()
    assert not migration.operations(), "nothing may start"
    assert sts.stats()["methods"].get("storage.buckets.get", 0) >= 1


def test_the_manager_stops_before_starting_when_the_service_account_cannot_be_read(
    migration: Migration, sts: Emulator
) -> None:
    """The credentials check the command-line manager makes first
    (googleServiceAccounts.get): refused, it exits 1 naming the role to
    grant, and nothing is started."""
    migration.prepare()
    sts.set_faults(no_service_agent=True)
    result = tool(
        "sts-job-manager",
        *migration.state_args(),
        "--transfer",
        "sts",
        "--project",
        PROJECT,
        "--exit-when-done",
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Storage Transfer service account" in result.stderr, result.stderr
    assert "roles/storagetransfer.user" in result.stderr, result.stderr
    assert sts.stats()["methods"] == {"storagetransfer.googleServiceAccounts.get": 1}
    assert not migration.operations(), "nothing may start"


def test_a_list_whose_page_tokens_cycle_stops_the_manager_with_an_error(
    migration: Migration, sts: Emulator
) -> None:
    """STS answering none -> A -> B -> A: the manager's cycle fails naming
    the token instead of listing forever."""
    migration.prepare()
    manager = sjm.Manager(http_options(migration))
    manager.run_once()  # jobs started: the next cycle lists their operations
    sts.set_faults(cycle_page_tokens=True)
    with pytest.raises(sjm.StsJobManagerError, match="page token 'A' a second time"):
        manager.run_once()
