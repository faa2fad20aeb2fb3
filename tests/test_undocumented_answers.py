"""Where STS's documents are silent, every plausible answer: the emulator has
a switch for each, and the manager (over REST, strict mode on) runs to the
end under each, every prefix copied by exactly one successful operation."""

from __future__ import annotations

import time

import pytest

import sts_job_manager as sjm
from conftest import Emulator, Migration

PROJECT = "silent-project"


@pytest.fixture
def sts(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    return emulator


def options(migration: Migration, **extra: object) -> dict[str, object]:
    return migration.options(transfer="sts", project=PROJECT, **extra)


def run_to_end(manager: sjm.Manager, limit: float = 120, between=None) -> dict:
    deadline = time.monotonic() + limit
    cycles = 0
    while True:
        summary = manager.run_once()
        cycles += 1
        if between is not None:
            between(cycles)
        if summary["done"]:
            return summary
        assert time.monotonic() < deadline, f"not finished: {summary}"
        time.sleep(0.2)


def assert_each_prefix_once(migration: Migration) -> None:
    migration.assert_copied()
    migration.assert_no_overlapping_operations()
    for prefix in migration.prefixes:
        succeeded = [
            op
            for op in migration.operations()
            if op["transferSpec"]["objectConditions"]["includePrefixes"] == [prefix]
            and op["status"] == "SUCCESS"
        ]
        assert len(succeeded) == 1, f"{prefix}: {len(succeeded)} successful operations"
    assert {status for status, _ in migration.jobs().values()} == {"done"}


def patch_job_status(sts: Emulator, name: str, status: str) -> None:
    """Someone else's hand on a job: a status patch, as gcloud sends it."""
    body = {
        "projectId": PROJECT,
        "transferJob": {"status": status},
        "updateTransferJobFieldMask": "status",
    }
    sts.call("PATCH", f"/v1/{name}", body)


@pytest.mark.parametrize("answer", ["FAILED_PRECONDITION", "ABORTED", "ALLOW"])
@pytest.mark.parametrize("reuse", [True, False])
def test_run_while_an_operation_is_under_way(
    migration: Migration, sts: Emulator, answer: str, reuse: bool
) -> None:
    """Refused with either code, or not refused at all: a start that meets
    its own operation under way follows it and never doubles it."""
    migration.prepare()
    # One-time jobs do not start on their own: the manager's overdue-start
    # path runs them again while their first run may still be going.
    sts.set_faults(run_while_active=answer, skip_scheduled_starts=True, bytes_per_second=20000)
    manager = sjm.Manager(options(migration, no_job_reuse=not reuse, start_timeout=0.5))
    run_to_end(manager)
    assert_each_prefix_once(migration)


@pytest.mark.parametrize("code", ["FAILED_PRECONDITION", "PERMISSION_DENIED", "ALREADY_EXISTS"])
def test_a_refused_run_with_nothing_under_way_is_a_named_failure(
    migration: Migration, sts: Emulator, code: str
) -> None:
    migration.prepare()
    sts.set_faults(refuse_runs=code)
    manager = sjm.Manager(options(migration, max_retries=0))
    for _ in range(30):
        try:
            manager.run_once()
        except sjm.StsJobManagerError:
            break  # halted: the refusals proved permanent
        time.sleep(0.05)
    # Named with its code, never read as "busy" and retried forever.
    refused = [row for row in migration.history() if row[1] == "error"]
    assert refused, "no prefix failed"
    assert all(code in (row[3] or "") for row in refused), refused
    statuses = {status for status, _ in migration.jobs().values()}
    assert "done" not in statuses
    assert not migration.operations(), "an operation ran although every run was refused"


@pytest.mark.parametrize("code", [None, "FAILED_PRECONDITION", "PERMISSION_DENIED"])
@pytest.mark.parametrize("hand", ["DELETED", "DISABLED"])
def test_pool_jobs_deleted_or_disabled_by_someone_else_are_replaced(
    migration: Migration, sts: Emulator, code: str | None, hand: str
) -> None:
    migration.prepare()
    faults: dict[str, object] = {"bytes_per_second": 8000}
    if code is not None:
        faults["gone_job_code"] = code
    sts.set_faults(**faults)
    manager = sjm.Manager(options(migration, max_concurrent_jobs=2))
    meddled: set[str] = set()

    def meddle(cycle: int) -> None:
        # Every pool job seen so far is deleted or disabled under the manager.
        if cycle % 3:
            return
        for job in migration.engine_jobs():
            if "sts-jm-pool-" in job["name"] and job["name"] not in meddled:
                patch_job_status(sts, job["name"], hand)
                meddled.add(job["name"])

    run_to_end(manager, between=meddle)
    assert meddled, "no pool job was touched"
    assert_each_prefix_once(migration)


def test_jobs_come_back_with_an_empty_schedule(migration: Migration, sts: Emulator) -> None:
    """Real STS may answer `"schedule": {}` for a job made without one: a
    restarted manager must not take a pool job for a scheduled start."""
    migration.prepare()
    sts.set_faults(empty_schedule=True, bytes_per_second=8000)
    first = sjm.Manager(options(migration, max_concurrent_jobs=2))
    first.run_once()
    # A new manager (a restart) reconciles and adopts what it finds.
    run_to_end(sjm.Manager(options(migration, max_concurrent_jobs=2)))
    assert_each_prefix_once(migration)


@pytest.mark.parametrize("reuse", [True, False])
def test_a_create_whose_reply_was_lost_is_recognised_as_ours(
    migration: Migration, sts: Emulator, reuse: bool
) -> None:
    migration.prepare()
    sts.set_faults(lose_create_replies=3)
    run_to_end(sjm.Manager(options(migration, no_job_reuse=not reuse)))
    assert_each_prefix_once(migration)
    assert sts.stats()["requests"] > 0


def test_another_migrations_job_is_never_adopted(
    migration: Migration, sts: Emulator, tmp_path
) -> None:
    """A job of the same prefix between other buckets, listed because the
    bucket filter narrows nothing: checked on our side, left alone."""
    other = migration.root / "other-destination"
    other.mkdir()
    sts.set_faults(ignore_bucket_filter=True, skip_scheduled_starts=True)
    prefix = migration.prefixes[0]
    today = time.gmtime()
    date = {"year": today.tm_year, "month": today.tm_mon, "day": today.tm_mday}
    body = {
        "name": "transferJobs/someone-elses-job",
        "projectId": PROJECT,
        "status": "ENABLED",
        "description": f"Created via STS Job Manager - {prefix}",
        "transferSpec": {
            "gcsDataSource": {"bucketName": migration.source_bucket},
            "gcsDataSink": {"bucketName": "other-destination"},
            "objectConditions": {"includePrefixes": [prefix]},
        },
        "schedule": {"scheduleStartDate": date, "scheduleEndDate": date},
    }
    sts.call("POST", "/v1/transferJobs", body)
    sts.set_faults(skip_scheduled_starts=False)
    migration.prepare()
    run_to_end(sjm.Manager(options(migration)))
    assert_each_prefix_once(migration)
    _, job = migration.jobs()[prefix]
    assert job is not None and "someone-elses-job" not in job
    assert not any(other.iterdir()), "the other migration's job was run"


@pytest.mark.parametrize("offset", [-600, 600])
@pytest.mark.parametrize("reuse", [True, False])
def test_google_clock_minutes_off_this_hosts(
    migration: Migration, sts: Emulator, offset: int, reuse: bool
) -> None:
    """STS's clock ten minutes behind or ahead of this host's: nothing is
    hidden (the manager compares STS's times with STS's, and names with
    names), nothing is started twice."""
    migration.prepare()
    sts.set_faults(clock_offset_seconds=offset, bytes_per_second=20000)
    manager = sjm.Manager(options(migration, no_job_reuse=not reuse, reconcile_interval=3600))
    run_to_end(manager, limit=60)
    assert_each_prefix_once(migration)


def test_the_cleanup_tool_racing_the_manager_leaves_no_row_stuck(
    migration: Migration, sts: Emulator
) -> None:
    """sts-remove-successful-one-time-jobs between an operation's success
    and the manager's next sync: the row follows its operation to its end."""
    from conftest import tool

    migration.prepare()
    manager = sjm.Manager(options(migration, no_job_reuse=True, max_concurrent_jobs=2))
    manager.run_once()
    deadline = time.monotonic() + 60
    while not any(op["status"] == "SUCCESS" for op in migration.operations()):
        assert time.monotonic() < deadline, "no operation finished"
        time.sleep(0.1)
    removed = tool("sts-remove-successful-one-time-jobs", "--transfer", "sts", "--project", PROJECT)
    assert removed.stdout.startswith("Removed "), removed.stdout
    assert not removed.stdout.startswith("Removed 0 "), removed.stdout
    run_to_end(manager)
    assert_each_prefix_once(migration)
