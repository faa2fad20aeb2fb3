"""Crash atomicity, proven point by point rather than by random kills.

`STS_JOB_MANAGER_CRASH_AT=N` aborts a tool right before the N-th statement of
a state write (README, "Crash points"). For N = 1, 2, ... until a run ends
without reaching it, each step that writes (the manager's start rounds and
syncs, a plan load, a requeue, a verification) is run from the same state,
crashed at N, checked as the crash left it (all of a write or none of it),
then run again to its end and checked: nothing lost, nothing doubled (no
prefix with a second operation, overlapping or not).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from conftest import BIN, Emulator, Migration, make_migration, sql

CRASHED = -signal.SIGABRT
# Enough for the largest walk here (a manager run of three prefixes takes
# about 40 points); a walk that does not end by then is a failure.
MOST_POINTS = 400
MANAGER = ["--sleep-timeout", "0.05", "--job-interval", "0.05", "--metrics-interval", "0.2"]


def run(
    name: str, *args: str, crash_at: int | None = None, **env: str
) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    environment.pop("STS_JOB_MANAGER_CRASH_AT", None)
    if crash_at is not None:
        environment["STS_JOB_MANAGER_CRASH_AT"] = str(crash_at)
    return subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, timeout=120, env=environment
    )


def copy_of(base: Migration, into: Path) -> Migration:
    """The base migration (state and buckets, engine included), copied."""
    shutil.copytree(base.root.parent, into)
    moved = replace(
        base,
        root=into / base.root.relative_to(base.root.parent),
        state=into / base.state.relative_to(base.root.parent),
        objects=dict(base.objects),
        prefixes=list(base.prefixes),
    )
    return moved


def walk(
    base: Migration,
    work: Path,
    step: Callable[[Migration, int | None], subprocess.CompletedProcess],
    after_crash: Callable[[Migration], None],
    after_rerun: Callable[[Migration], None],
) -> int:
    """Crashes `step` at every point in turn; returns how many there were."""
    for n in range(1, MOST_POINTS + 1):
        migration = copy_of(base, work / f"crash-{n}")
        crashed = step(migration, n)
        if crashed.returncode != CRASHED:
            # Point n was never reached: every point before it was crashed at.
            assert crashed.returncode == 0, crashed.stderr
            assert "STS_JOB_MANAGER_CRASH_AT" not in crashed.stderr
            after_rerun(migration)
            print(f"{step.__name__}: crashed at each of {n - 1} points")
            return n - 1
        assert f"STS_JOB_MANAGER_CRASH_AT={n}: aborting" in crashed.stderr, crashed.stderr
        after_crash(migration)
        rerun = step(migration, None)
        assert rerun.returncode == 0, f"after a crash at point {n}: {rerun.stderr}"
        after_rerun(migration)
        shutil.rmtree(migration.root.parent)
    raise AssertionError(f"the step still crashed at point {MOST_POINTS}")


def latest_rows(migration: Migration) -> dict[str, tuple[str, str | None]]:
    """Each prefix's latest history row: (status, job name)."""
    rows: dict[str, tuple[str, str | None]] = {}
    for prefix, status, job_name, _ in migration.history():
        rows[prefix] = (status, job_name)
    return rows


def assert_rows_agree(migration: Migration) -> None:
    """Every job row says what its latest history row says: a step's job
    rows and history rows were written together or not at all."""
    latest = latest_rows(migration)
    for prefix, (status, job_name) in migration.jobs().items():
        # A loaded prefix has no history until its first start.
        expected = latest.get(prefix, ("waiting", None))
        assert expected == (status, job_name), (
            f"{prefix}: job row {status}/{job_name}, latest history row {latest.get(prefix)}"
        )


def operations_by_prefix(migration: Migration) -> dict[str, list[str]]:
    ops: dict[str, list[str]] = {}
    for op in migration.operations():
        prefix = op["transferSpec"]["objectConditions"]["includePrefixes"][0]
        ops.setdefault(prefix, []).append(op["name"])
    return ops


def recorded_operations(migration: Migration) -> dict[str, set[str]]:
    """Operation names each prefix's history rows hold."""
    recorded: dict[str, set[str]] = {}
    for prefix, _, _, results in migration.history():
        if results:
            name = json.loads(results).get("name")
            if name:
                recorded.setdefault(prefix, set()).add(name)
    return recorded


def test_a_manager_crashed_at_every_point_of_its_writes_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    base = make_migration(tmp_path / "base", prefixes=3, files_per_prefix=3, size=500)
    base.prepare()

    def manager(migration: Migration, crash_at: int | None) -> subprocess.CompletedProcess:
        emulator = Emulator(migration.root)
        try:
            return run(
                "sts-job-manager",
                "--state",
                f"sqlite:{migration.state}",
                "--transfer",
                "sts",
                "--project",
                "crash-project",
                "--max-concurrent-jobs",
                "3",
                *MANAGER,
                "--exit-when-done",
                crash_at=crash_at,
                STORAGE_TRANSFER_EMULATOR_HOST=emulator.host,
            )
        finally:
            emulator.stop()

    def after_crash(migration: Migration) -> None:
        assert_rows_agree(migration)
        # Each operation started is one STS knows of; at most one a prefix.
        for prefix, ops in operations_by_prefix(migration).items():
            assert len(ops) == 1, f"{prefix} has {len(ops)} operations: {ops}"

    def after_rerun(migration: Migration) -> None:
        assert {status for status, _ in migration.jobs().values()} == {"done"}
        assert_rows_agree(migration)
        migration.assert_copied()
        ops = operations_by_prefix(migration)
        assert sorted(ops) == sorted(migration.prefixes)
        for prefix, names in ops.items():
            assert len(names) == 1, f"{prefix} ran {len(names)} operations: {names}"
        # Nothing lost: the history names every operation, and only those.
        recorded = recorded_operations(migration)
        assert recorded == {prefix: set(names) for prefix, names in ops.items()}

    points = walk(base, tmp_path, manager, after_crash, after_rerun)
    assert points >= 10, f"only {points} crash points in a whole migration"


def test_a_plan_load_crashed_at_every_point_is_all_or_nothing(tmp_path: Path) -> None:
    base = make_migration(tmp_path / "base", prefixes=4, files_per_prefix=3, size=300)

    def load(migration: Migration, crash_at: int | None) -> subprocess.CompletedProcess:
        return run(
            "sts-plan",
            *migration.backend_args(),
            "--shards",
            "4",
            "--load",
            crash_at=crash_at,
        )

    def table(migration: Migration, statement: str) -> list[tuple]:
        try:
            return sorted(sql(migration.state, statement))
        except Exception:  # noqa: BLE001 (no table yet: nothing written)
            return []

    def loaded(migration: Migration) -> tuple[list[str], list[str]]:
        jobs = [row[0] for row in table(migration, "SELECT prefix FROM sts_job")]
        planned = [row[0] for row in table(migration, "SELECT prefix FROM sts_job_plan")]
        return jobs, planned

    def after_crash(migration: Migration) -> None:
        jobs, planned = loaded(migration)
        # The plan may be saved before the job table gains its prefixes,
        # never after; the job table gains all of them or none.
        assert jobs in ([], planned), (jobs, planned)

    def after_rerun(migration: Migration) -> None:
        jobs, planned = loaded(migration)
        assert jobs == planned and len(jobs) >= 2, (jobs, planned)
        statuses = table(migration, "SELECT DISTINCT status FROM sts_job")
        assert statuses == [("waiting",)]
        cover = sorted(name for name in migration.objects if name.startswith(tuple(jobs)))
        assert cover == sorted(migration.objects)

    points = walk(base, tmp_path, load, after_crash, after_rerun)
    assert points >= 3


def finished(base_dir: Path) -> Migration:
    """A finished migration on the local engine (no emulator needed)."""
    migration = make_migration(base_dir, prefixes=3, files_per_prefix=3, size=500)
    migration.prepare()
    done = run("sts-job-manager", *migration.backend_args(), *MANAGER, "--exit-when-done")
    assert done.returncode == 0, done.stderr
    return migration


def test_a_requeue_crashed_at_every_point_is_all_or_nothing(tmp_path: Path) -> None:
    base = finished(tmp_path / "base")
    chosen = base.prefixes[:2]
    choice = tmp_path / "chosen.json"
    choice.write_text(json.dumps(chosen))

    def requeue(migration: Migration, crash_at: int | None) -> subprocess.CompletedProcess:
        return run(
            "sts-requeue",
            *migration.state_args(),
            "--job-prefix-source-file",
            str(choice),
            crash_at=crash_at,
        )

    def after_crash(migration: Migration) -> None:
        assert_rows_agree(migration)
        statuses = {migration.jobs()[p][0] for p in chosen}
        assert statuses in ({"done"}, {"waiting"}), statuses

    def after_rerun(migration: Migration) -> None:
        assert_rows_agree(migration)
        jobs = migration.jobs()
        assert [jobs[p] for p in chosen] == [("waiting", None)] * 2
        assert jobs[base.prefixes[2]][0] == "done"
        # The manager then runs each requeued prefix exactly once more.
        again = run("sts-job-manager", *migration.backend_args(), *MANAGER, "--exit-when-done")
        assert again.returncode == 0, again.stderr
        ops = operations_by_prefix(migration)
        assert {p: len(ops[p]) for p in migration.prefixes} == {
            p: 2 if p in chosen else 1 for p in migration.prefixes
        }

    points = walk(base, tmp_path, requeue, after_crash, after_rerun)
    assert points >= 3


def test_a_verification_crashed_at_every_point_keeps_one_verdict_per_prefix(
    tmp_path: Path,
) -> None:
    base = finished(tmp_path / "base")
    verified = run("sts-verify", *base.backend_args(), "--all")
    assert verified.returncode == 0, verified.stderr
    # Then a copy goes bad: the next verification must say so, and requeue.
    tampered = next(name for name in base.objects if name.startswith(base.prefixes[1]))
    (base.destination / tampered).write_bytes(b"changed after the verification")

    def verify(migration: Migration, crash_at: int | None) -> subprocess.CompletedProcess:
        result = run(
            "sts-verify", *migration.backend_args(), "--all", "--requeue", crash_at=crash_at
        )
        # A finished verification that found the difference exits 4.
        if result.returncode == 4:
            result.returncode = 0
        return result

    def verdicts(migration: Migration) -> dict[str, str]:
        rows = sql(migration.state, "SELECT prefix, result FROM sts_job_verification")
        return dict(rows)

    def after_crash(migration: Migration) -> None:
        assert_rows_agree(migration)
        assert sorted(verdicts(migration)) == sorted(migration.prefixes)

    def after_rerun(migration: Migration) -> None:
        assert_rows_agree(migration)
        expected = dict.fromkeys(migration.prefixes, "verified")
        expected[base.prefixes[1]] = "mismatch"
        assert verdicts(migration) == expected
        jobs = migration.jobs()
        assert jobs[base.prefixes[1]] == ("waiting", None)
        assert {jobs[p][0] for p in migration.prefixes if p != base.prefixes[1]} == {"done"}

    points = walk(base, tmp_path, verify, after_crash, after_rerun)
    assert points >= 2
