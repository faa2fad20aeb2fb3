"""sts-plan, sts-verify and sts-requeue as Python functions (what an
Airflow task or a notebook calls): the same work as the tools, typed
results, and bad arguments refused by the same parser, named."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plan_verify import assert_exact_cover, skewed_migration

import sts_job_manager as sjm
from conftest import Migration, sql


def test_plan_verify_and_requeue_from_python(tmp_path: Path) -> None:
    migration = skewed_migration(tmp_path)
    options = migration.options()

    # Nothing written without out or load.
    shown = sjm.plan(options, shards=8)
    assert shown["loaded"] is None and shown["written_to"] is None
    assert not migration.state.exists()
    assert shown["objects"] == len(migration.objects)
    assert shown["bytes"] == sum(len(d) for d in migration.objects.values())

    result = sjm.plan(options, shards=8, load=True, out=migration.prefix_file)
    prefixes = [p["prefix"] for p in result["planned"]]
    assert_exact_cover(list(migration.objects), prefixes)
    assert result["loaded"] == len(prefixes) and result["already_present"] == 0
    assert result["written_to"] == str(migration.prefix_file)
    planned = sql(migration.state, "SELECT prefix, bytes FROM sts_job_plan")
    assert {p: b for p, b in planned} == {p["prefix"]: p["bytes"] for p in result["planned"]}

    sjm.Manager(options, exit_when_done=True).run_until_done(timeout=120)
    migration.assert_copied()

    verified = sjm.verify(options)
    assert len(verified["checked"]) == len(prefixes)
    assert {c["verification"]["result"] for c in verified["checked"]} == {"verified"}
    again = sjm.verify(options)
    assert (len(again["checked"]), again["skipped"]) == (0, len(prefixes))

    changed = "huge/part-0003.bin"
    (migration.destination / changed).write_bytes(b"changed after the verification")
    (owner,) = [p for p in prefixes if changed.startswith(p)]
    caught = sjm.verify(options, recheck_all=True, requeue=True)
    assert caught["requeued"] == 1
    mismatched = [c for c in caught["checked"] if c["verification"]["result"] == "mismatch"]
    assert [c["verification"]["prefix"] for c in mismatched] == [owner]
    assert migration.jobs()[owner][0] == "waiting"

    # Requeue by name: refused whole for an unknown prefix, nothing changed.
    with pytest.raises(sjm.InputError, match="'nope/' is not in job table"):
        sjm.requeue(options, prefixes=[prefixes[0], "nope/"])
    assert migration.jobs()[prefixes[0]][0] == "done"
    assert sjm.requeue(options, prefixes=[prefixes[0]]) == {"requeued": [prefixes[0]]}
    assert migration.jobs()[prefixes[0]][0] == "waiting"
    # Without prefixes: every prefix in error (none here).
    assert sjm.requeue(options) == {"requeued": []}

    only = sjm.verify(options, prefixes=[owner])
    assert [c["verification"]["prefix"] for c in only["checked"]] == [owner]


def test_bad_tool_arguments_are_named(tmp_path: Path) -> None:
    migration: Migration = skewed_migration(tmp_path)
    options = migration.options()
    with pytest.raises(sjm.InputError, match="--shards"):
        sjm.plan(options, shards=8, shard_bytes="1MB")
    with pytest.raises(sjm.InputError, match="shard-bytes"):
        sjm.plan(options, shard_bytes="lots")
    with pytest.raises(sjm.InputError, match="one string"):
        sjm.verify(options, prefixes="a/")
    with pytest.raises(sjm.InputError, match="one string"):
        sjm.requeue(options, prefixes="a/")
    assert not migration.state.exists()
