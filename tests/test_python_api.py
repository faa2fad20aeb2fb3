"""sjm.State, run_until_done and the async API against states made by real runs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import sts_job_manager as sjm
from conftest import FAILING_PREFIX, Migration, make_migration


def state_of(migration: Migration) -> sjm.State:
    return sjm.State(state=f"sqlite:{migration.state}")


def test_jobs_frame_is_the_job_table(failed_migration: Migration) -> None:
    jobs = state_of(failed_migration).jobs()
    assert list(jobs.columns) == ["prefix", "status", "job_name", "last_updated"]
    expected = {p: s for p, (s, _) in failed_migration.jobs().items()}
    assert dict(zip(jobs["prefix"], jobs["status"])) == expected
    assert expected[FAILING_PREFIX] == "error"
    assert {s for p, s in expected.items() if p != FAILING_PREFIX} == {"done"}
    assert str(jobs["last_updated"].dtype) == "datetime64[us, UTC]"
    assert jobs["job_name"].str.startswith("transferOperations/").all()


def test_history_frame_matches_the_history_table(failed_migration: Migration) -> None:
    history = state_of(failed_migration).history()
    assert list(history.columns) == [
        "prefix",
        "status",
        "job_name",
        "operation_results",
        "timestamp",
    ]
    rows = failed_migration.history()
    assert len(history) == len(rows)
    assert sorted(
        zip(history["prefix"], history["status"], history["job_name"].fillna(""))
    ) == sorted((p, s, j or "") for p, s, j, _ in rows)
    nulls = sum(r is None for *_, r in rows)
    assert nulls > 0, "start rows carry no operation results"
    assert history["operation_results"].isna().sum() == nulls
    assert history["timestamp"].is_monotonic_increasing


def test_failures_lists_exactly_the_injected_failing_objects(failed_migration: Migration) -> None:
    failures = state_of(failed_migration).failures()
    assert list(failures.columns) == [
        "prefix",
        "job_name",
        "error_code",
        "error_count",
        "failed_attempts",
        "object_url",
        "details",
        "time",
    ]
    injected = {
        f"gs://{failed_migration.source_bucket}/{name}"
        for name in failed_migration.objects
        if name.startswith(FAILING_PREFIX)
    }
    assert len(injected) == 3
    assert sorted(failures["object_url"]) == sorted(injected)
    assert set(failures["prefix"]) == {FAILING_PREFIX}
    assert set(failures["error_code"]) == {"PERMISSION_DENIED"}
    assert set(failures["error_count"]) == {3}
    assert set(failures["details"]) == {"injected fault"}
    jobs = state_of(failed_migration).jobs().set_index("prefix")
    assert set(failures["job_name"]) == {jobs.loc[FAILING_PREFIX, "job_name"]}


def test_progress_totals_equal_the_source_bucket(failed_migration: Migration) -> None:
    # The migration ran without retries: its prefix in error is finished.
    progress = state_of(failed_migration).progress(retry_errors=False)
    assert list(progress.columns) == [
        "scope",
        "prefix",
        "status",
        "job_name",
        "objects_found",
        "objects_copied",
        "objects_skipped",
        "objects_failed",
        "objects_failed_attempts",
        "objects_left",
        "bytes_found",
        "bytes_copied",
        "bytes_skipped",
        "bytes_failed",
        "bytes_failed_attempts",
        "bytes_left",
        "started",
        "updated",
        "throughput_bytes_per_second",
        "eta_seconds",
        "eta_basis",
    ]
    assert list(progress["scope"]) == ["prefix"] * 4 + ["total"]
    total = progress[progress["scope"] == "total"].iloc[0]
    assert pd.isna(total["prefix"])
    sizes = {name: len(data) for name, data in failed_migration.objects.items()}
    failing = sum(s for n, s in sizes.items() if n.startswith(FAILING_PREFIX))
    assert total["bytes_found"] == sum(sizes.values())
    assert total["objects_found"] == len(sizes)
    assert total["bytes_copied"] == sum(sizes.values()) - failing
    assert total["bytes_failed"] == failing
    assert total["objects_failed"] == 3
    assert total["eta_seconds"] == 0
    # With retries, the failing bytes are still to copy, as status() says.
    retried = state_of(failed_migration).progress()
    eta = retried[retried["scope"] == "total"].iloc[0]["eta_basis"]
    assert eta == state_of(failed_migration).status()["eta"]["basis"]
    per_prefix = progress[progress["scope"] == "prefix"].set_index("prefix")
    for prefix in failed_migration.prefixes:
        in_prefix = sum(s for n, s in sizes.items() if n.startswith(prefix))
        assert per_prefix.loc[prefix, "bytes_found"] == in_prefix, prefix
    assert (per_prefix["throughput_bytes_per_second"].drop(FAILING_PREFIX) > 0).all()


def test_progress_of_a_migration_not_started_has_no_eta(migration: Migration) -> None:
    migration.prepare()
    progress = state_of(migration).progress()
    assert len(progress) == len(migration.prefixes) + 1
    assert (progress["bytes_found"] == 0).all()
    assert progress["eta_seconds"].isna().all()


def test_state_errors_are_package_exceptions(tmp_path: Path) -> None:
    with pytest.raises(sjm.StateError, match="sts-prepare-tables"):
        sjm.State(state=f"sqlite:{tmp_path / 'missing.db'}").history()
    assert not (tmp_path / "missing.db").exists(), "a wrong path creates nothing"
    (tmp_path / "empty.db").touch()
    state = sjm.State(state=f"sqlite:{tmp_path / 'empty.db'}")
    with pytest.raises(sjm.StateError, match="sts-prepare-tables"):
        state.history()
    with pytest.raises(sjm.OptionsError):
        sjm.State(state="sqlite:x.db", no_such_option=1)


def test_status_counts_sync_and_async_agree(failed_migration: Migration) -> None:
    state = state_of(failed_migration)
    counts = state.status_counts()
    assert counts == {"done": 3, "error": 1, "paused": 0, "running": 0, "waiting": 0}
    assert asyncio.run(state.status_counts_async()) == counts


def test_run_until_done_times_out_with_the_last_summary(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=500)
    manager = sjm.Manager(migration.options())
    with pytest.raises(sjm.MigrationTimeoutError) as raised:
        manager.run_until_done(timeout=0.5)
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.summary["counts"]["running"] >= 1
    assert not raised.value.summary["done"]
    for bad in (-1, float("nan"), float("inf"), 1e300):
        # Named, never a PanicException.
        with pytest.raises(ValueError, match="timeout"):
            manager.run_until_done(timeout=bad)


def test_run_until_done_summary_is_json_for_xcom(migration: Migration) -> None:
    migration.prepare()
    summary = sjm.Manager(migration.options()).run_until_done(timeout=120)
    assert summary["done"]
    assert summary["counts"]["done"] == len(migration.prefixes)
    assert json.loads(json.dumps(summary)) == summary
    migration.assert_copied()


def test_async_calls_run_concurrently(tmp_path: Path) -> None:
    """Three migrations driven at once from one event loop: their transfer
    operations overlap in time (run one after the other, they could not),
    and the event loop keeps running meanwhile."""
    migrations = [
        make_migration(tmp_path / f"m{i}", prefixes=2, files_per_prefix=2, size=3000)
        for i in range(3)
    ]
    for m in migrations:
        m.prepare()
        m.set_faults(bytes_per_second=6000)
    managers = [sjm.Manager(m.options()) for m in migrations]

    async def main() -> tuple[list[dict], int]:
        ticks = 0
        calls = asyncio.gather(*(m.run_until_done_async(timeout=120) for m in managers))
        while not calls.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return await calls, ticks

    summaries, ticks = asyncio.run(main())
    assert all(s["done"] for s in summaries)
    assert ticks > 10, "the event loop was blocked"
    spans = []
    for m in migrations:
        m.assert_copied()
        ops = m.operations()
        starts = [op["startTime"] for op in ops]
        ends = [op["endTime"] for op in ops]
        spans.append((min(starts), max(ends)))
    latest_start = max(start for start, _ in spans)
    earliest_end = min(end for _, end in spans)
    assert latest_start < earliest_end, f"the migrations ran one after another: {spans}"


def test_concurrent_run_once_async_on_one_manager_is_serialised(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=2000)  # keep every started job running
    manager = sjm.Manager(migration.options(max_concurrent_jobs=20))

    async def main() -> list[dict]:
        return await asyncio.gather(*(manager.run_once_async() for _ in range(3)))

    summaries = asyncio.run(main())
    # One cycle at a time: the ramp sees each previous cycle's jobs.
    assert sorted(len(s["started"]) for s in summaries) == [1, 2, 3]
    assert migration.active_operations() + sum(
        s == "done" for s, _ in migration.jobs().values()
    ) == len(migration.prefixes)


def test_missing_analysis_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, failed_migration: Migration
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: object, **kwargs: object) -> object:
        if name == "pyarrow":
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    state = state_of(failed_migration)
    for frame in (state.jobs, state.history, state.failures, state.progress):
        with pytest.raises(ImportError, match=r"sts-job-manager\[analysis\]"):
            frame()
    assert state.status_counts()["done"] == 3, "counts need no extra"


def test_creating_the_coroutine_does_no_work(migration: Migration) -> None:
    migration.prepare()
    manager = sjm.Manager(migration.options())
    coroutine = manager.run_once_async()
    assert migration.operations() == []
    summary = asyncio.run(coroutine)
    assert summary["started"] == [migration.prefixes[0]]


def test_cancelling_an_async_call_releases_the_manager(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=500)
    manager = sjm.Manager(migration.options())

    async def main() -> dict:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(manager.run_until_done_async(), 1.0)
        # Were the cancelled loop still running, it would hold the manager.
        return await asyncio.wait_for(manager.run_once_async(), 30)

    summary = asyncio.run(main())
    assert summary["counts"]["running"] >= 1


def test_ctrl_c_stops_run_until_done(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=500)
    script = (
        "import json, sys, sts_job_manager as sjm\n"
        "manager = sjm.Manager(json.loads(sys.argv[1]))\n"
        "print('started', flush=True)\n"
        "try:\n"
        "    manager.run_until_done()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(migration.options())],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while migration.active_operations() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    running = migration.active_operations() >= 1
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    assert running, "no operation ever ran: the signal came before any work"
    assert out.strip() == "interrupted"
    assert child.returncode == 0
