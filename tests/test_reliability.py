"""Crashes, restarts and a second manager on the same table."""

from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest

import sts_job_manager as sjm
from conftest import BIN, FAST, Emulator, Migration, make_migration, sql, tool


def test_kill_9_loop_loses_and_doubles_nothing(tmp_path, monkeypatch) -> None:
    migration = make_migration(tmp_path, prefixes=10, files_per_prefix=4, size=3000)
    migration.prepare()
    emulator = Emulator(migration.root, "--bytes-per-second", "2500")
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    args = [
        str(BIN / "sts-job-manager"),
        "--state",
        f"sqlite:{migration.state}",
        "--transfer",
        "sts",
        "--project",
        "crash-project",
        "--max-concurrent-jobs",
        "4",
        *FAST,
        "--exit-when-done",
    ]
    rng = random.Random(2026)
    try:
        kills = 0
        while kills < 20:
            manager = subprocess.Popen(args, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 0.8))
            if manager.poll() is not None:
                break  # finished before this kill
            manager.send_signal(signal.SIGKILL)
            manager.wait()
            kills += 1
        assert kills == 20, "the migration finished too soon to test 20 crashes"
        final = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
    finally:
        emulator.stop()

    assert {status for status, _ in migration.jobs().values()} == {"done"}
    migration.assert_copied()
    migration.assert_no_overlapping_operations()
    history = migration.history()
    assert {row[0] for row in history if row[1] == "done"} == set(migration.prefixes)


def test_a_second_manager_refuses_then_takes_over_an_expired_lease(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=1000)
    args = [*migration.backend_args(), *FAST, "--lease-seconds", "3"]
    first = subprocess.Popen([str(BIN / "sts-job-manager"), *args], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while migration.active_operations() == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = tool("sts-job-manager", *args, "--exit-when-done", check=False)
        assert second.returncode == 3, second.stderr
        assert "another sts-job-manager" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    migration.set_faults()
    # The dead manager's lease (3 s) runs out; then the second one takes
    # over. Attempts are at least 0.5 s apart, so however slow this machine,
    # at most 3 / 0.5 + 1 of them can be refused before it expires.
    refused = 0
    while True:
        retry = tool("sts-job-manager", *args, "--exit-when-done", check=False)
        if retry.returncode == 0:
            break
        refused += 1
        assert retry.returncode == 3 and refused <= 7, (refused, retry.stderr)
        time.sleep(0.5)
    assert {status for status, _ in migration.jobs().values()} == {"done"}
    migration.assert_copied()

    # A manager on another machine: refused until its lease expires.
    until = datetime.now(timezone.utc) + timedelta(seconds=3)
    sql(
        migration.state,
        "INSERT OR REPLACE INTO sts_job_lease (id, holder, until) VALUES (1, 'other-host:7:7', ?)",
        (until.isoformat(timespec="microseconds").replace("+00:00", "Z"),),
    )
    refused = tool("sts-job-manager", *args, "--exit-when-done", check=False)
    assert refused.returncode == 3, refused.stderr
    assert "other-host:7:7" in refused.stderr, refused.stderr
    time.sleep(max(0.0, (until - datetime.now(timezone.utc)).total_seconds()) + 0.2)
    tool("sts-job-manager", *args, "--exit-when-done")


def test_the_python_api_takes_the_lease_too(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=1000)
    args = [*migration.backend_args(), *FAST, "--lease-seconds", "60"]
    first = subprocess.Popen([str(BIN / "sts-job-manager"), *args], stderr=subprocess.DEVNULL)
    manager = sjm.Manager(migration.options(lease_seconds=60))
    try:
        deadline = time.monotonic() + 30
        while migration.active_operations() == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        held = f"another sts-job-manager .*:{first.pid}:"
        for call in (manager.run_once, manager.iteration, partial(manager.run_until_done, 5)):
            with pytest.raises(sjm.LeaseHeldError, match=held):
                call()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        first.kill()
        first.wait()

    # The CLI gave the lease up on SIGTERM; run_once takes it and gives it up.
    manager.run_once()
    migration.set_faults()
    # iteration() keeps the lease between calls: the CLI is refused...
    manager.iteration()
    refused = tool("sts-job-manager", *args, "--exit-when-done", check=False)
    assert refused.returncode == 3, refused.stderr
    assert f":{os.getpid()}:" in refused.stderr, refused.stderr
    # ...until the manager is collected, which gives it up.
    del manager, call
    gc.collect()
    deadline = time.monotonic() + 10
    while True:
        finished = tool("sts-job-manager", *args, "--exit-when-done", check=False, timeout=240)
        if finished.returncode == 0:
            break
        assert finished.returncode == 3 and time.monotonic() < deadline, finished.stderr
        time.sleep(0.2)
    assert {status for status, _ in migration.jobs().values()} == {"done"}
    migration.assert_copied()
