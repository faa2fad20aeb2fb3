"""`--preserve` and `--move` (issue 23): object metadata kept through the
emulator and verified, moves that empty the source, and the refusals."""

from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import FAST, Emulator, Migration, make_migration, tool

KEY = "projects/p/locations/us/keyRings/ring/cryptoKeys/key"
CREATED = "2019-03-04T05:06:07.089Z"
EVERY_FIELD = "storage-class,kms-key,temporary-hold,time-created"


def storage_object(emulator: Emulator, bucket: str, name: str) -> dict:
    """objects.get through the emulator's Cloud Storage API."""
    return emulator.call("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}")


def test_preserve_round_trip_through_the_emulator(
    migration: Migration, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    names = sorted(migration.objects)
    for i, name in enumerate(names):
        kept = emulator.call(
            "POST",
            "/_emulator/objects",
            {
                "bucket": migration.source_bucket,
                "name": name,
                "storageClass": "NEARLINE" if i % 2 else "COLDLINE",
                "kmsKeyName": KEY,
                "temporaryHold": i % 3 == 0,
                "timeCreated": CREATED,
            },
        )
        assert kept["storageClass"] in ("NEARLINE", "COLDLINE")
        assert kept["timeCreated"] == CREATED
    migration.prepare()
    http = [*migration.state_args(), "--transfer", "sts", "--project", "http-project"]
    tool(
        "sts-job-manager",
        *http,
        *FAST,
        "--exit-when-done",
        "--preserve",
        EVERY_FIELD,
        timeout=300,
    )
    migration.assert_copied()
    # Every job the manager made or patched carried the metadata options.
    for job in migration.engine_jobs():
        options = job["transferSpec"]["transferOptions"]["metadataOptions"]
        assert options == {
            "storageClass": "STORAGE_CLASS_PRESERVE",
            "kmsKey": "KMS_KEY_PRESERVE",
            "temporaryHold": "TEMPORARY_HOLD_PRESERVE",
            "timeCreated": "TIME_CREATED_PRESERVE_AS_CUSTOM_TIME",
        }
    for i, name in enumerate(names):
        source = storage_object(emulator, migration.source_bucket, name)
        copy = storage_object(emulator, migration.destination_bucket, name)
        assert copy["storageClass"] == source["storageClass"]
        assert copy["kmsKeyName"] == KEY
        assert copy.get("temporaryHold", False) == (i % 3 == 0)
        assert copy["customTime"] == CREATED
    verified = tool("sts-verify", *http, "--preserve", EVERY_FIELD)
    assert f"Checked {len(migration.prefixes)} prefixes" in verified.stdout

    # A preserved field that differs is a named mismatch (exit 4).
    changed = names[1]
    emulator.call(
        "POST",
        "/_emulator/objects",
        {
            "bucket": migration.destination_bucket,
            "name": changed,
            "storageClass": "STANDARD",
            "kmsKeyName": KEY,
            "customTime": CREATED,
        },
    )
    caught = tool("sts-verify", *http, "--all", "--preserve", EVERY_FIELD, check=False)
    assert caught.returncode == 4, caught.stdout + caught.stderr
    assert (
        f"{changed}: storage class differs: NEARLINE in the source, STANDARD in the destination"
        in caught.stdout
    )
    # Not asked for, not compared.
    plain = tool("sts-verify", *http, "--all", "--preserve", "kms-key")
    assert "0 mismatched" in plain.stdout


def test_without_preserve_a_copy_takes_the_destination_defaults(
    migration: Migration, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    name = sorted(migration.objects)[0]
    emulator.call(
        "POST",
        "/_emulator/objects",
        {"bucket": migration.source_bucket, "name": name, "storageClass": "ARCHIVE"},
    )
    migration.prepare()
    http = [*migration.state_args(), "--transfer", "sts", "--project", "http-project"]
    tool("sts-job-manager", *http, *FAST, "--exit-when-done", timeout=300)
    for job in migration.engine_jobs():
        assert "metadataOptions" not in job["transferSpec"].get("transferOptions", {})
    assert storage_object(emulator, migration.destination_bucket, name)["storageClass"] == (
        "STANDARD"
    )
    assert "customTime" not in storage_object(emulator, migration.destination_bucket, name)
    tool("sts-verify", *http)
    caught = tool("sts-verify", *http, "--all", "--preserve", "storage-class", check=False)
    assert caught.returncode == 4
    assert "storage class differs: ARCHIVE in the source, STANDARD in the destination" in (
        caught.stdout
    )
    # A later run with --preserve skips what matches in content; with
    # --overwrite-dest-objects the copies are made again, metadata kept.
    prefix = next(p for p in migration.prefixes if name.startswith(p))
    migration.prefix_file.write_text(f'["{prefix}"]')
    tool(
        "sts-requeue",
        *migration.state_args(),
        "--job-prefix-source-file",
        str(migration.prefix_file),
    )
    again = ["--exit-when-done", "--preserve", "storage-class", "--overwrite-dest-objects"]
    tool("sts-job-manager", *http, *FAST, *again, timeout=300)
    assert storage_object(emulator, migration.destination_bucket, name)["storageClass"] == (
        "ARCHIVE"
    )
    tool("sts-verify", *http, "--all", "--preserve", "storage-class")


def test_move_empties_the_source_and_verify_checks_what_is_left(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=3, files_per_prefix=4)
    migration.prepare()
    tool("sts-job-manager", *migration.backend_args(), *FAST, "--exit-when-done", "--move")
    migration.assert_copied()
    for name in migration.objects:
        assert not (migration.source / name).exists(), f"{name} was not moved"
    assert (migration.source / "elsewhere.txt").exists(), "outside every prefix: left alone"
    ops = migration.operations()
    assert all(
        op["transferSpec"]["transferOptions"]["deleteObjectsFromSourceAfterTransfer"] for op in ops
    )
    assert sum(int(op["counters"]["objectsDeletedFromSource"]) for op in ops) == 12
    moved = tool("sts-verify", *migration.backend_args(), "--move")
    assert "3 verified, 0 mismatched" in moved.stdout
    # A new object written after the move is not judged; one left behind is.
    (migration.source / "data/p00/new.bin").write_bytes(b"written after the move")
    left = migration.source / "data/p01/nested/file-0.bin"
    left.write_bytes(migration.objects["data/p01/nested/file-0.bin"])
    old = time.time() - 86_400
    os.utime(left, (old, old))
    caught = tool("sts-verify", *migration.backend_args(), "--move", "--all", check=False)
    assert caught.returncode == 4, caught.stdout + caught.stderr
    assert "MISMATCH data/p01/" in caught.stdout
    assert "data/p01/nested/file-0.bin: left in the source after the move" in caught.stdout
    assert "MISMATCH data/p00/" not in caught.stdout


def test_move_with_a_mirror_and_bad_preserve_words_are_refused(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=1, files_per_prefix=1)
    migration.prepare()
    refused = tool(
        "sts-cutover",
        *migration.backend_args(),
        "--frozen",
        "--delete-unique-in-destination",
        "--move",
        check=False,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--move and --delete-unique-in-destination cannot be combined" in refused.stderr
    assert not migration.operations(), "refused before anything ran"
    for name in ("sts-job-manager", "sts-cutover", "sts-verify"):
        bad = tool(
            name, *migration.backend_args(), "--preserve", "storage-class,colour", check=False
        )
        assert bad.returncode == 2, bad.stdout + bad.stderr
        assert "--preserve" in bad.stderr and "'colour'" in bad.stderr, bad.stderr
    inventories = ["--source-inventory", "d.src", "--destination-inventory", "d.dst"]
    for flag in (["--move"], ["--preserve", "kms-key"]):
        listed = tool("sts-verify", *migration.backend_args(), *inventories, *flag, check=False)
        assert listed.returncode == 2, listed.stdout + listed.stderr
        assert "verified by listing, not from inventory tables" in listed.stderr
    with pytest.raises(sjm.errors.OptionsError) as error:
        sjm.Options(preserve="acl,colour")
    assert error.value.option == "preserve"
    assert sjm.Options(preserve="acl, storage-class", move=True).move is True


def test_cutover_passes_move_and_preserve_over_sts_http(
    migration: Migration, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pass (the migration, deltas, the final one) moves and keeps the
    storage class, through the REST client and the emulator's strict layer;
    the frozen proof is a move's."""
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    old = time.time() - 86_400
    for name in migration.objects:
        os.utime(migration.source / name, (old, old))
        emulator.call(
            "POST",
            "/_emulator/objects",
            {"bucket": migration.source_bucket, "name": name, "storageClass": "NEARLINE"},
        )
    migration.prepare()
    args = [
        *migration.state_args(),
        "--transfer",
        "sts",
        "--project",
        "http-project",
        *FAST,
        "--move",
        "--preserve",
        "storage-class",
    ]
    first = tool("sts-cutover", *args, "--until-objects", "0", "--max-passes", "1", timeout=300)
    assert f"Pass 1 moved {len(migration.objects)} objects" in first.stdout
    migration.assert_copied()
    assert not any((migration.source / name).exists() for name in migration.objects)
    late = "data/p03/late.bin"
    (migration.source / late).write_bytes(b"written before the freeze")
    emulator.call(
        "POST",
        "/_emulator/objects",
        {"bucket": migration.source_bucket, "name": late, "storageClass": "COLDLINE"},
    )
    frozen = tool("sts-cutover", *args, "--frozen", timeout=300)
    assert "Pass 3 (final) done" in frozen.stdout
    assert "Pass 3 moved 1 objects" in frozen.stdout
    assert "0 mismatched" in frozen.stdout
    assert not (migration.source / late).exists(), "the final pass moved it"
    assert storage_object(emulator, migration.destination_bucket, late)["storageClass"] == (
        "COLDLINE"
    )
    for name in migration.objects:
        copy = storage_object(emulator, migration.destination_bucket, name)
        assert copy["storageClass"] == "NEARLINE"
    for job in migration.engine_jobs():
        options = job["transferSpec"]["transferOptions"]
        assert options["deleteObjectsFromSourceAfterTransfer"] is True
        assert options["metadataOptions"] == {"storageClass": "STORAGE_CLASS_PRESERVE"}
