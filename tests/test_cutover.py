"""Passes and `sts-cutover` (issue 23) on the local engine: delta passes copy
exactly what changed, the final pass and its proof, a kill in mid-pass."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import BIN, FAST, Emulator, Migration, make_migration, sql, tool

DAY = 86_400


def backdate(migration: Migration) -> None:
    """Every source object last modified a day ago: the migration's data
    is older than any pass, as it is in a real cutover."""
    old = time.time() - DAY
    for path in migration.source.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))


def cutover(migration: Migration, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
    return tool("sts-cutover", *migration.backend_args(), *FAST, *flags, check=check, timeout=300)


def passes(migration: Migration) -> list[tuple]:
    return sql(
        migration.state,
        "SELECT pass, kind, objects_found, objects_copied, objects_deleted, ended_at"
        " FROM sts_job_passes ORDER BY pass",
    )


def operations_of_pass(migration: Migration, since: bool) -> list[dict]:
    """The engine's operations with (or without) lastModifiedSince."""
    return [
        op
        for op in migration.operations()
        if ("lastModifiedSince" in op["transferSpec"]["objectConditions"]) == since
    ]


def change_source(migration: Migration) -> dict[str, str]:
    """A new object, one rewritten with the same size and other bytes, and
    one deleted; returns what was done to which name."""
    new = "data/p00/nested/new.bin"
    (migration.source / new).write_bytes(b"fresh object")
    migration.objects[new] = b"fresh object"
    rewritten = "data/p01/nested/file-0.bin"
    old = (migration.source / rewritten).read_bytes()
    other = bytes(b ^ 0xFF for b in old)
    assert len(other) == len(old)
    (migration.source / rewritten).write_bytes(other)
    migration.objects[rewritten] = other
    deleted = "data/p02/nested/file-1.bin"
    (migration.source / deleted).unlink()
    del migration.objects[deleted]
    return {"new": new, "rewritten": rewritten, "deleted": deleted}


def test_each_delta_pass_copies_exactly_what_changed(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=3, files_per_prefix=4)
    backdate(migration)
    migration.prepare()
    # One delta pass per run: --until-objects 0 never converges.
    cutover(migration, "--until-objects", "0", "--max-passes", "1")
    migration.assert_copied()
    recorded = passes(migration)
    assert [(p[0], p[1]) for p in recorded] == [(1, "migration"), (2, "delta")]
    assert recorded[0][3] == 12, "the migration copied every object"
    assert recorded[1][2:5] == (0, 0, 0), "nothing changed: the delta found nothing"
    deltas = operations_of_pass(migration, since=True)
    assert len(deltas) == 3 and all(op["status"] == "SUCCESS" for op in deltas)
    for op in deltas:
        assert op["transferSpec"]["transferOptions"]["overwriteWhen"] == "DIFFERENT"

    changed = change_source(migration)
    cutover(migration, "--until-objects", "0", "--max-passes", "1")
    recorded = passes(migration)
    assert len(recorded) == 3
    assert recorded[2][1:5] == ("delta", 2, 2, 0), recorded[2]
    third = [op for op in migration.operations() if op["name"] not in {d["name"] for d in deltas}]
    third = [op for op in third if "lastModifiedSince" in op["transferSpec"]["objectConditions"]]
    copied = {
        op["transferSpec"]["objectConditions"]["includePrefixes"][0]: int(
            op["counters"].get("objectsCopiedToSink", "0")
        )
        for op in third
    }
    assert copied == {"data/p00/": 1, "data/p01/": 1, "data/p02/": 0}
    migration.assert_copied()
    # Copy mode: the object deleted from the source stays in the destination.
    assert (migration.destination / changed["deleted"]).exists()
    # Each pass's lastModifiedSince is the previous operation's start less the margin.
    starts = {
        op["transferSpec"]["objectConditions"]["includePrefixes"][0]: op["startTime"]
        for op in deltas
    }
    for op in third:
        prefix = op["transferSpec"]["objectConditions"]["includePrefixes"][0]
        since = op["transferSpec"]["objectConditions"]["lastModifiedSince"]
        assert round(_seconds(starts[prefix]) - _seconds(since), 3) == 300

    status = sjm.State(migration.options()).status()
    assert status["pass"] == 3
    assert [(p["pass"], p["objects_copied"]) for p in status["passes"]] == [
        (1, 12),
        (2, 0),
        (3, 2),
    ]
    text = tool("sts-status", *migration.state_args()).stdout
    assert "Pass 3 (delta, ended): 2 objects" in text


def _seconds(rfc3339: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def tree(bucket: Path, prefixes: list[str]) -> dict[str, bytes]:
    return {
        str(p.relative_to(bucket)): p.read_bytes()
        for p in bucket.rglob("*")
        if p.is_file() and str(p.relative_to(bucket)).startswith(tuple(prefixes))
    }


def test_cutover_converges_then_proves_a_copy_and_a_mirror(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=3, files_per_prefix=4)
    backdate(migration)
    migration.prepare()
    converged = cutover(migration)
    assert "Converged: pass 2 copied 0 objects" in converged.stdout
    assert "freeze writes to the source" in converged.stdout
    assert "sts-cutover --frozen" in converged.stdout

    changed = change_source(migration)
    frozen = cutover(migration, "--frozen")
    assert "Pass 3 (final) done" in frozen.stdout
    assert "Objects only in the destination: 1." in frozen.stdout
    source, destination = (
        tree(migration.source, migration.prefixes),
        tree(migration.destination, migration.prefixes),
    )
    assert source.items() <= destination.items(), "a copy: the destination holds the source"
    assert set(destination) - set(source) == {changed["deleted"]}

    # A change slipped in after the final pass: the proof catches it.
    late = "data/p01/nested/late.bin"
    (migration.source / late).write_bytes(b"written after the freeze")
    caught = cutover(migration, "--frozen", check=False)
    assert caught.returncode == 4, caught.stdout + caught.stderr
    assert "MISMATCH data/p01/" in caught.stdout
    assert f"{late}: missing from the destination" in caught.stdout

    # Deltas again, then a mirror: the destination equals the source.
    cutover(migration)
    mirror = cutover(migration, "--frozen", "--delete-unique-in-destination")
    assert mirror.returncode == 0
    assert "Objects only in the destination: 0." in mirror.stdout
    assert tree(migration.source, migration.prefixes) == tree(
        migration.destination, migration.prefixes
    )
    kinds = [p[1] for p in passes(migration)]
    assert kinds[:3] == ["migration", "delta", "final"]
    assert kinds[-1] == "mirror"
    last = passes(migration)[-1]
    assert last[4] == 1, "the mirror deleted the one object only the destination held"
    mirrored = [
        op
        for op in migration.operations()
        if op["transferSpec"].get("transferOptions", {}).get("deleteObjectsUniqueInSink")
    ]
    assert mirrored and all(
        "lastModifiedSince" not in op["transferSpec"]["objectConditions"] for op in mirrored
    )


def test_a_pass_killed_midway_is_resumed_with_no_operation_doubled(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=3, files_per_prefix=4, size=4000)
    backdate(migration)
    migration.prepare()
    cutover(migration, "--until-objects", "0", "--max-passes", "1")
    for name in list(migration.objects):
        data = bytes(b ^ 0x55 for b in migration.objects[name])
        (migration.source / name).write_bytes(data)
        migration.objects[name] = data
    # Slow copies: the pass is under way long enough to be killed in it.
    migration.set_faults(bytes_per_second=4000)
    process = subprocess.Popen(
        [
            str(BIN / "sts-cutover"),
            *migration.backend_args(),
            *FAST,
            "--until-objects",
            "0",
            "--max-passes",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            running = [
                op
                for op in operations_of_pass(migration, since=True)
                if op["status"] == "IN_PROGRESS"
                and int(op.get("counters", {}).get("objectsCopiedToSink", "0")) > 0
            ]
            if len(passes(migration)) == 3 and running:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the third pass never got under way")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert passes(migration)[2][5] is None, "killed before the pass ended"
    migration.set_faults()
    cutover(migration, "--until-objects", "0", "--max-passes", "1")
    recorded = passes(migration)
    assert len(recorded) == 3, "the pass was resumed, not a new one begun"
    # Found again in full by the taken-over operations (STS's counters of a
    # resumed operation start over; what was copied is skipped as identical).
    assert recorded[2][5] is not None and recorded[2][2] == 12
    migration.assert_copied()
    per_prefix: dict[str, int] = {}
    for op in migration.operations():
        prefix = op["transferSpec"]["objectConditions"]["includePrefixes"][0]
        per_prefix[prefix] = per_prefix.get(prefix, 0) + 1
    # The migration's, the first delta's and the resumed pass's: one each.
    assert per_prefix == dict.fromkeys(migration.prefixes, 3)
    migration.assert_no_overlapping_operations()


def test_cutover_over_sts_http_sends_only_what_the_discovery_document_allows(
    migration: Migration, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delta passes (lastModifiedSince, overwriteWhen) and a mirror
    (deleteObjectsUniqueInSink) through the REST client, checked by the
    emulator's strict layer (the fixture fails the test on a violation)."""
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    backdate(migration)
    migration.prepare()
    args = [*migration.state_args(), "--transfer", "sts", "--project", "http-project", *FAST]
    tool("sts-cutover", *args, "--until-objects", "0", "--max-passes", "1", timeout=300)
    change_source(migration)
    tool("sts-cutover", *args, "--until-objects", "0", "--max-passes", "1", timeout=300)
    assert passes(migration)[-1][1:4] == ("delta", 2, 2)
    result = tool("sts-cutover", *args, "--frozen", "--delete-unique-in-destination", timeout=300)
    assert "Objects only in the destination: 0." in result.stdout
    assert tree(migration.source, migration.prefixes) == tree(
        migration.destination, migration.prefixes
    )
    assert emulator.stats()["strict"]["checked"] > 0


def test_cutover_holds_the_lease_as_the_manager_does(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=2, files_per_prefix=1)
    migration.prepare()
    manager = sjm.Manager(migration.options())
    manager.iteration()  # keeps the job table's lease
    refused = cutover(migration, check=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "another sts-job-manager" in refused.stderr
    del manager


def test_delta_passes_on_jobs_of_their_own_patch_each_job_first(tmp_path: Path) -> None:
    """With --no-job-reuse each prefix's job is run again for a pass: its
    spec is patched to the pass's first, or it would copy with the old one."""
    migration = make_migration(tmp_path, prefixes=3, files_per_prefix=4)
    backdate(migration)
    migration.prepare()
    cutover(migration, "--no-job-reuse", "--until-objects", "0", "--max-passes", "1")
    change_source(migration)
    cutover(migration, "--no-job-reuse", "--until-objects", "0", "--max-passes", "1")
    assert [p[1:4] for p in passes(migration)] == [
        ("migration", 12, 12),
        ("delta", 0, 0),
        ("delta", 2, 2),
    ]
    jobs = migration.engine_jobs()
    assert len(jobs) == 3 and not any("/sts-jm-pool-" in job["name"] for job in jobs)
    assert all("lastModifiedSince" in job["transferSpec"]["objectConditions"] for job in jobs)
    migration.assert_copied()
