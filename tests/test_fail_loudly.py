"""A first day gone wrong: every failure is named once, permanent causes stop
the waste, retries are bounded, exit codes tell the truth, the stand-ins refuse
what STS refuses, and a migration begun by Google's original tool completes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import (
    BIN,
    FAST,
    Emulator,
    Migration,
    gapic_client,
    make_migration,
    original_tool_start,
    sql,
    tool,
)

PROJECT = "loud-project"


def manager(migration: Migration, *extra: str, env_sts: Emulator | None = None, timeout=180):
    backend = migration.backend_args()
    if env_sts is not None:
        backend = [backend[0], backend[1], "--transfer", "sts", "--project", PROJECT]
    return tool(
        "sts-job-manager", *backend, *FAST, "--exit-when-done", *extra, check=False, timeout=timeout
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


@pytest.fixture
def sts(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    return emulator


# --- permanent causes: a bucket typo, missing grants, a request STS refuses


def test_a_missing_source_bucket_is_named_before_anything_starts(migration: Migration) -> None:
    migration.prepare()
    result = manager(migration, "--source-bucket", "migration-sourc")
    assert result.returncode == 2, result.stderr
    assert "gs://migration-sourc (--source-bucket) does not exist" in result.stderr
    assert migration.operations() == [], "nothing was started"
    assert {s for s, _ in migration.jobs().values()} == {"waiting"}


def test_a_missing_bucket_over_sts_stops_after_three_refusals(
    migration: Migration, sts: Emulator
) -> None:
    """Over the REST API the bucket cannot be checked up front (no Cloud
    Storage emulator): STS refuses each create with FAILED_PRECONDITION."""
    migration.prepare()
    result = manager(migration, "--destination-bucket", "no-such-bucket", env_sts=sts)
    assert result.returncode == 1, result.stderr
    assert "3 prefixes in a row failed with FAILED_PRECONDITION" in result.stderr
    assert "project-loud-project@storage-transfer-service.iam.gserviceaccount.com" in result.stderr
    assert migration.operations() == []
    statuses = [s for s, _ in migration.jobs().values()]
    # Refusals come one at a time once one is seen: exactly three.
    assert statuses.count("error") == 3 and statuses.count("waiting") == 3
    refused = [json.loads(r[3]) for r in migration.history() if r[1] == "error"]
    assert len(refused) == 3
    assert all(r["errorBreakdowns"][0]["errorCode"] == "FAILED_PRECONDITION" for r in refused)


PERMANENT = [
    # (engine faults, the halt line names, what each error row holds)
    (
        {"fail_objects_matching": "*", "error_code": "PERMISSION_DENIED"},
        "failed with PERMISSION_DENIED on gs://migration-source",
        "PERMISSION_DENIED",
    ),
    ({"refuse_creates": "INVALID_ARGUMENT"}, "failed with INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    ({"refuse_creates": "PERMISSION_DENIED"}, "failed with PERMISSION_DENIED", "PERMISSION_DENIED"),
]


@pytest.mark.parametrize(("faults", "halt", "code"), PERMANENT)
def test_a_permanent_cause_stops_new_starts_with_one_line(
    tmp_path: Path, faults: dict, halt: str, code: str
) -> None:
    migration = make_migration(tmp_path, prefixes=16, files_per_prefix=1)
    migration.prepare()
    migration.set_faults(**faults)
    result = manager(migration, timeout=60)
    assert result.returncode == 1, result.stderr
    halt_lines = [line for line in error_lines(result.stderr) if "in a row" in line]
    assert halt_lines and halt in halt_lines[0], result.stderr
    assert "to fix:" in halt_lines[0]
    # Each prefix tried once; those started before the third failure was
    # seen fail too, and the rest are never started.
    statuses = [s for s, _ in migration.jobs().values()]
    failed = statuses.count("error")
    assert failed >= 3 and statuses.count("waiting") == len(migration.prefixes) - failed
    assert statuses.count("waiting") >= 3, statuses
    assert len(migration.operations()) <= failed
    # One ERROR line per failure, naming the prefix and the code.
    failure_lines = [line for line in error_lines(result.stderr) if "failed (attempt 1)" in line]
    assert len(failure_lines) == failed, result.stderr
    assert all(code in line and "data/p" in line for line in failure_lines)
    for _, status, _, results in migration.history():
        if status == "error":
            assert json.loads(results)["errorBreakdowns"][0]["errorCode"] == code


# --- bounded retries, exit codes, requeue


def test_retries_are_bounded_then_exit_4_and_requeue_repairs(migration: Migration) -> None:
    migration.prepare()
    # One prefix fails on every object: a cause that is not permanent.
    migration.set_faults(fail_objects_matching="data/p02/*", error_code="UNAVAILABLE")
    result = manager(migration, "--max-retries", "2")
    assert result.returncode == 4, result.stderr
    assert "finished with 1 prefixes in error" in result.stderr
    assert '"data/p02/" UNAVAILABLE' in result.stderr
    ops = [
        op
        for op in migration.operations()
        if op["transferSpec"]["objectConditions"]["includePrefixes"] == ["data/p02/"]
    ]
    assert len(ops) == 3, "the first attempt and two retries, no more"
    attempts = [line for line in error_lines(result.stderr) if "data/p02/" in line]
    assert [("attempt 1" in a, "attempt 3" in a) for a in (attempts[0], attempts[-1])] == [
        (True, False),
        (False, True),
    ]
    assert "out of retries (--max-retries 2)" in attempts[-1]
    # Each earlier failure says when it is retried (the waits themselves,
    # 1, 2, 4 ... job intervals, are unit-tested in the core).
    assert all("retried after" in a for a in attempts[:-1])

    # What a sensor sees: the prefix is out of retries under these options,
    # still retryable under more generous ones; counts from unfinished rows.
    state = sjm.State(migration.options(max_retries=2))
    assert state.final_errors() == ["data/p02/"]
    assert sjm.State(migration.options(max_retries=3)).final_errors() == []
    assert sjm.State(migration.options(no_retry_on_job_error=True)).final_errors() == ["data/p02/"]
    counts = state.status_counts()
    assert counts["error"] == 1 and counts["done"] == len(migration.prefixes) - 1
    assert sum(counts.values()) == len(migration.prefixes)

    # Fixed: requeue the failed prefixes, and the migration completes.
    migration.set_faults()
    requeued = tool("sts-requeue", *migration.state_args())
    assert "Requeued 1 prefixes" in requeued.stdout
    assert migration.jobs()["data/p02/"] == ("waiting", None)
    done = manager(migration)
    assert done.returncode == 0, done.stderr
    assert {s for s, _ in migration.jobs().values()} == {"done"}
    migration.assert_copied()


def test_one_stubborn_prefix_among_twenty_never_halts_the_rest(tmp_path: Path) -> None:
    """PERMISSION_DENIED on every object of one prefix, a permanent cause,
    retried: one prefix, never "3 prefixes in a row". The other nineteen
    finish; exit 4 names the one."""
    migration = make_migration(tmp_path, prefixes=20, files_per_prefix=1)
    migration.prepare()
    migration.set_faults(fail_objects_matching="data/p07/*", error_code="PERMISSION_DENIED")
    result = manager(migration, "--max-retries", "3", "--max-concurrent-jobs", "2")
    assert result.returncode == 4, result.stderr
    assert "in a row" not in result.stderr
    assert "finished with 1 prefixes in error" in result.stderr
    assert '"data/p07/" PERMISSION_DENIED' in result.stderr
    statuses = migration.jobs()
    assert statuses.pop("data/p07/")[0] == "error"
    assert {status for status, _ in statuses.values()} == {"done"}
    migration.assert_copied(skip=("data/p07/",))


def test_requeue_refuses_unknown_and_running_prefixes(migration: Migration) -> None:
    migration.prepare()
    chosen = migration.root.parent / "chosen.json"
    chosen.write_text(json.dumps(["data/p00/", "nope/"]))
    result = tool(
        "sts-requeue",
        *migration.state_args(),
        "--job-prefix-source-file",
        str(chosen),
        check=False,
    )
    assert result.returncode == 2
    assert "'nope/' is not in job table 'sts_job'" in result.stderr
    sql(migration.state, "UPDATE sts_job SET status = 'running' WHERE prefix = 'data/p00/'")
    chosen.write_text(json.dumps(["data/p00/"]))
    result = tool(
        "sts-requeue",
        *migration.state_args(),
        "--job-prefix-source-file",
        str(chosen),
        check=False,
    )
    assert result.returncode == 2 and "'data/p00/' is running" in result.stderr


def test_no_retry_with_every_prefix_in_error_exits_4(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(fail_objects_matching="*", error_code="UNAVAILABLE")
    result = manager(migration, "--no-retry-on-job-error")
    assert result.returncode == 4, result.stderr
    assert f"finished with {len(migration.prefixes)} prefixes in error" in result.stderr
    assert "every prefix is finished" not in result.stderr


def test_a_state_file_deleted_while_running_is_an_error(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=2000)
    process = subprocess.Popen(
        [str(BIN / "sts-job-manager"), *migration.backend_args(), *FAST, "--exit-when-done"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not migration.operations():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{migration.state}{suffix}").unlink(missing_ok=True)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "was deleted or replaced while in use" in stderr
    assert "every prefix is finished" not in stderr


# --- the local engine behaves as STS does


def test_the_engine_refuses_jobs_sts_refuses(migration: Migration) -> None:
    import sts_job_manager as sjm  # noqa: F401  (the engine is reached through the emulator)

    emulator = Emulator(migration.root)
    try:
        client = gapic_client(emulator)
        from google.api_core import exceptions

        def create(source: str, sink: str, prefixes: list[str]) -> None:
            client.create_transfer_job(
                {
                    "transfer_job": {
                        "project_id": PROJECT,
                        "status": 1,
                        "transfer_spec": {
                            "gcs_data_source": {"bucket_name": source},
                            "gcs_data_sink": {"bucket_name": sink},
                            "object_conditions": {"include_prefixes": prefixes},
                        },
                    }
                }
            )

        src, dst = migration.source_bucket, migration.destination_bucket
        cases = [
            (src, dst, ["a\nb/"], exceptions.BadRequest),
            (src, dst, ["/a/"], exceptions.BadRequest),
            (src, dst, ["x" * 1025], exceptions.BadRequest),
            (src, dst, ["a/", "a/b/"], exceptions.BadRequest),
            ("no-such-source", dst, ["a/"], exceptions.BadRequest),
            (src, "no-such-sink", ["a/"], exceptions.BadRequest),
        ]
        for source, sink, prefixes, error in cases:
            with pytest.raises(error):
                create(source, sink, prefixes)
        assert not (migration.root / "no-such-sink").exists(), "no bucket is ever created"
        client.transport.close()
    finally:
        emulator.stop()


def test_a_slow_object_is_copied_once_and_a_kill_leaves_no_partial_file(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=1, files_per_prefix=1, size=70_000)
    migration.prepare()
    # One object takes about 7 s: longer than the engine's 5 s lease.
    migration.set_faults(bytes_per_second=10_000)
    args = [str(BIN / "sts-job-manager"), *migration.backend_args(), *FAST, "--exit-when-done"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (op,) = migration.operations()
    assert op["status"] == "SUCCESS"
    assert op["counters"]["objectsCopiedToSink"] == "1"
    assert "objectsFromSourceFailed" not in op["counters"] and "errorBreakdowns" not in op
    migration.assert_copied()

    # Again from scratch, killed mid-copy, then restarted.
    again = make_migration(tmp_path / "again", prefixes=1, files_per_prefix=1, size=70_000)
    again.prepare()
    again.set_faults(bytes_per_second=10_000)
    temp = again.root / ".sts-engine" / "tmp"
    killed = subprocess.Popen(
        [str(BIN / "sts-job-manager"), *again.backend_args(), *FAST, "--exit-when-done"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (temp.exists() and any(temp.rglob("*"))):
        assert time.monotonic() < deadline, "no copy began"
        time.sleep(0.1)
    time.sleep(1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not any(again.destination.rglob("*.bin")), "a partial copy is not an object"
    again.set_faults(bytes_per_second=0)
    result = subprocess.run(
        [str(BIN / "sts-job-manager"), *again.backend_args(), *FAST, "--exit-when-done"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    again.assert_copied()
    copied = sorted(p.relative_to(again.destination) for p in again.destination.rglob("*"))
    assert [str(p) for p in copied if p.suffix] == sorted(again.objects), "nothing extra"
    assert not temp.exists() or not any(p.is_file() for p in temp.rglob("*"))


# --- taking over a migration begun by Google's original tool


def test_a_migration_begun_by_the_original_tool_completes_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migration = make_migration(tmp_path, prefixes=6, files_per_prefix=3)
    migration.prepare()
    emulator = Emulator(migration.root)
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    client = gapic_client(emulator)

    def original_start(prefix: str) -> str:
        name = original_tool_start(client, migration, PROJECT, prefix)
        assert not name.startswith("transferJobs/sts-jm-")
        return name

    def set_row(prefix: str, status: str, job_name: str) -> None:
        sql(
            migration.state,
            "UPDATE sts_job SET status = ?, job_name = ? WHERE prefix = ?",
            (status, job_name, prefix),
        )

    def operation_of(job: str) -> str:
        for _ in range(100):
            for op in migration.operations():
                if op["transferJobName"] == job:
                    return op["name"]
            time.sleep(0.1)
        raise AssertionError(f"no operation for {job}")

    p = migration.prefixes
    try:
        emulator.set_faults(bytes_per_second=4000)
        # p0, p1: started and recorded the way the original records them.
        set_row(p[0], "running", operation_of(original_start(p[0])))
        set_row(p[1], "running", operation_of(original_start(p[1])))
        # p2: its operation running, but the original stopped before
        # writing the row.
        operation_of(original_start(p[2]))
        # p3, p4: jobs created, operations not begun yet (STS starts a
        # one-time job a little later); p3 recorded with the job's name.
        emulator.set_faults(skip_scheduled_starts=True)
        set_row(p[3], "running", original_start(p[3]))
        original_start(p[4])
        emulator.set_faults(skip_scheduled_starts=False, bytes_per_second=0)

        result = tool(
            "sts-job-manager",
            "--state",
            f"sqlite:{migration.state}",
            "--transfer",
            "sts",
            "--project",
            PROJECT,
            *FAST,
            "--start-timeout",
            "2",
            "--exit-when-done",
            check=False,
            timeout=180,
        )
    finally:
        client.transport.close()
        emulator.stop()
    assert result.returncode == 0, result.stderr
    assert {s for s, _ in migration.jobs().values()} == {"done"}
    migration.assert_copied()
    migration.assert_no_overlapping_operations()
    ours = {
        op["transferSpec"]["objectConditions"]["includePrefixes"][0]
        for op in migration.operations()
        if op["transferJobName"].startswith("transferJobs/sts-jm-")
    }
    assert ours == {p[5]}, "the original's prefixes were followed, not started again"
