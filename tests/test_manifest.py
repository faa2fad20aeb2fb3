"""Re-running exactly the objects that need it: ``sts-requeue --failed-objects``
and ``sts-verify --requeue --objects`` write a CSV manifest per prefix (Cloud
Storage media upload), and the manager's next start of that prefix carries
``transferSpec.transferManifest``: the operation finds and copies only the
listed objects, on the local engine and through the emulator over REST
(strict against Google's discovery documents)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import Emulator, Migration, make_migration, sql, tool

PROJECT = "manifest-project"
DENIED = "*/deny/*"
MANIFESTS = "manifest-bucket"

# Names a CSV must quote: commas, quotes, spaces, unicode, a backslash.
ODD_NAMES = [
    "data/p01/deny/a, b.bin",
    'data/p01/deny/"quoted".bin',
    "data/p01/deny/with space.bin",
    "data/p01/deny/ünï 日本.bin",
    "data/p02/deny/plain-1.bin",
    "data/p02/deny/plain-2.bin",
    "data/p02/deny/back\\slash.bin",
]


def with_denied_objects(base: Path) -> Migration:
    """Four prefixes; seven objects in two of them fail while the fault is on."""
    migration = make_migration(base, prefixes=4, files_per_prefix=3)
    for name in ODD_NAMES:
        path = migration.source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        migration.objects[name] = name.encode()
    (migration.root / MANIFESTS).mkdir()
    migration.prepare()
    return migration


def failed_by_prefix() -> dict[str, set[str]]:
    by_prefix: dict[str, set[str]] = {}
    for name in ODD_NAMES:
        by_prefix.setdefault(name[: len("data/p01/")], set()).add(name)
    return by_prefix


def read_manifest(migration: Migration, location: str) -> list[str]:
    bucket, _, path = location.removeprefix("gs://").partition("/")
    text = (migration.root / bucket / path).read_text(encoding="utf-8")
    return [row[0] for row in csv.reader(io.StringIO(text, newline=""))]


def manifest_runs(migration: Migration) -> dict[str, dict]:
    """The latest operation with a manifest, per prefix."""
    runs = {}
    for op in migration.operations():
        if "transferManifest" in op["transferSpec"]:
            runs[op["transferSpec"]["objectConditions"]["includePrefixes"][0]] = op
    return runs


def pending_manifests(migration: Migration) -> list[tuple]:
    try:
        return sql(migration.state, "SELECT prefix, location FROM sts_job_manifests")
    except Exception:  # noqa: BLE001 (no table: nothing pending)
        return []


def fail_then_requeue_failed_objects(migration: Migration, options: dict, **requeue) -> dict:
    migration.set_faults(fail_objects_matching=DENIED, error_code="PERMISSION_DENIED")
    summary = sjm.Manager({**options, "no_retry_on_job_error": True}).run_until_done(timeout=120)
    assert summary["failed_count"] == 2
    migration.set_faults()
    return sjm.requeue(
        options,
        failed_objects=True,
        manifest_location=f"gs://{MANIFESTS}/requeue/",
        **requeue,
    )


def assert_manifest_runs_copied_exactly_the_failed(migration: Migration, result: dict) -> None:
    expected = failed_by_prefix()
    assert sorted(result["requeued"]) == sorted(expected)
    # Each manifest lists exactly its prefix's failed objects, names intact.
    for manifest in result["manifests"]:
        names = read_manifest(migration, manifest["location"])
        assert sorted(names) == sorted(expected[manifest["prefix"]])
        assert manifest["objects"] == len(names)
    runs = manifest_runs(migration)
    assert sorted(runs) == sorted(expected)
    for prefix, op in runs.items():
        counters = op["counters"]
        assert op["status"] == "SUCCESS"
        assert int(counters["objectsFoundFromSource"]) == len(expected[prefix])
        assert int(counters["objectsCopiedToSink"]) == len(expected[prefix])
    migration.assert_copied()
    assert not (migration.destination / "elsewhere.txt").exists()
    # The history row of each manifest run says so (its operation's spec).
    for prefix, op in runs.items():
        results = [
            json.loads(r)
            for p, status, job, r in migration.history()
            if p == prefix and job == op["name"] and r
        ]
        assert results and all(
            r["transferSpec"]["transferManifest"]["location"].startswith(f"gs://{MANIFESTS}/")
            for r in results
        )
    # A manifest run that succeeded leaves nothing pending.
    assert pending_manifests(migration) == []


@pytest.mark.parametrize("reuse", [True, False], ids=["job-reuse", "no-job-reuse"])
def test_failed_objects_are_copied_again_and_only_they(tmp_path: Path, reuse: bool) -> None:
    migration = with_denied_objects(tmp_path)
    options = migration.options(no_job_reuse=not reuse)
    result = fail_then_requeue_failed_objects(migration, options)
    # Written with the requeue, before any start.
    assert sorted(p for p, _ in pending_manifests(migration)) == sorted(failed_by_prefix())
    summary = sjm.Manager(options).run_until_done(timeout=120)
    assert summary["counts"]["done"] == 4
    assert_manifest_runs_copied_exactly_the_failed(migration, result)
    verified = tool("sts-verify", *migration.backend_args(), "--all")
    assert "4 verified, 0 mismatched" in verified.stdout
    # The figures: a manifest run finds its objects only, so what each
    # prefix holds stays what its whole run found; all of it copied.
    report = json.loads(tool("sts-status", *migration.state_args(), "--json").stdout)
    objects = len(migration.objects)
    assert report["objects"]["found"] == objects
    assert report["objects"]["copied"] == objects
    assert report["objects"]["failed"] == 0


def test_failed_objects_over_rest_through_the_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migration = with_denied_objects(tmp_path)
    emulator = Emulator(migration.root)
    try:
        for variable in (
            "STORAGE_TRANSFER_EMULATOR_HOST",
            "LOGGING_EMULATOR_HOST",
            "STORAGE_EMULATOR_HOST",
        ):
            monkeypatch.setenv(variable, emulator.host)
        options = migration.options(transfer="sts", project=PROJECT)
        result = fail_then_requeue_failed_objects(migration, options)
        sjm.Manager(options).run_until_done(timeout=120)
        assert_manifest_runs_copied_exactly_the_failed(migration, result)
        methods = emulator.stats()["methods"]
        # One media upload per manifest, checked against storage.v1.json.
        assert methods["storage.objects.insert"] == 2
        verified = tool(
            "sts-verify",
            *migration.state_args(),
            "--transfer",
            "sts",
            "--project",
            PROJECT,
            "--all",
        )
        assert "4 verified, 0 mismatched" in verified.stdout
    finally:
        emulator.stop()


def test_failures_the_logs_do_not_name_are_said(tmp_path: Path) -> None:
    migration = with_denied_objects(tmp_path)
    options = migration.options(no_retry_on_job_error=True)
    migration.set_faults(fail_objects_matching=DENIED)
    sjm.Manager(options).run_until_done(timeout=120)
    migration.set_faults()
    # Two of p01's four entries never arrived from Cloud Logging.
    sql(
        migration.state,
        "DELETE FROM sts_job_failed_objects WHERE object IN (?, ?)",
        (ODD_NAMES[0], ODD_NAMES[1]),
    )
    result = sjm.requeue(
        options, failed_objects=True, manifest_location=f"gs://{MANIFESTS}/partial/"
    )
    [warning] = result["warnings"]
    assert warning.startswith(
        "'data/p01/': its operation failed 4 objects, the transfer logs name 2"
    )
    counts = {m["prefix"]: m["objects"] for m in result["manifests"]}
    assert counts == {"data/p01/": 2, "data/p02/": 3}


def test_verify_requeues_every_tampered_object_past_the_first_hundred(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=2, files_per_prefix=150, size=64)
    (migration.root / MANIFESTS).mkdir()
    migration.prepare()
    sjm.Manager(migration.options()).run_until_done(timeout=120)
    migration.assert_copied()
    # 130 objects of one prefix tampered with: 70 deleted, 60 changed.
    tampered = sorted(n for n in migration.objects if n.startswith("data/p01/"))[:130]
    for i, name in enumerate(tampered):
        copy = migration.destination / name
        if i % 2 and i < 120:
            copy.write_bytes(b"changed")
        else:
            copy.unlink()
    checked = tool(
        "sts-verify",
        *migration.backend_args(),
        "--all",
        "--requeue",
        "--objects",
        "--manifest-location",
        f"gs://{MANIFESTS}/verify",
        check=False,
    )
    assert checked.returncode == 4, checked.stderr
    assert "130 objects to copy again" in checked.stdout
    [(prefix, location)] = pending_manifests(migration)
    assert prefix == "data/p01/"
    assert sorted(read_manifest(migration, location)) == tampered
    # The verification row keeps the first 100 names; the manifest has all.
    row = sjm.State(migration.options()).verification()
    kept = json.loads(row.set_index("prefix").loc["data/p01/", "offending_objects"])
    assert len(kept) == 100
    sjm.Manager(migration.options()).run_until_done(timeout=120)
    run = manifest_runs(migration)["data/p01/"]
    assert int(run["counters"]["objectsFoundFromSource"]) == 130
    assert int(run["counters"]["objectsCopiedToSink"]) == 130
    migration.assert_copied()
    tool("sts-verify", *migration.backend_args(), "--all")


def test_a_missing_manifest_fails_the_operation_loudly(tmp_path: Path) -> None:
    migration = with_denied_objects(tmp_path)
    options = migration.options(no_retry_on_job_error=True)
    result = fail_then_requeue_failed_objects(migration, options, prefixes=["data/p02/"])
    [manifest] = result["manifests"]
    bucket, _, path = manifest["location"].removeprefix("gs://").partition("/")
    (migration.root / bucket / path).unlink()
    summary = sjm.Manager(options).run_until_done(timeout=120)
    assert summary["counts"]["error"] == 2
    op = manifest_runs(migration)["data/p02/"]
    assert op["status"] == "FAILED"
    [breakdown] = op["errorBreakdowns"]
    assert breakdown["errorCode"] == "NOT_FOUND"
    assert breakdown["errorLogEntries"][0]["url"] == manifest["location"]
    assert int(op["counters"].get("objectsFoundFromSource", 0)) == 0
    # The manifest stays pending: a retry runs it again once it is back.
    assert pending_manifests(migration) == [("data/p02/", manifest["location"])]
    # A plain requeue drops it: the whole prefix runs again.
    sjm.requeue(options, prefixes=["data/p02/"])
    assert pending_manifests(migration) == []


def test_bad_input_is_refused_and_nothing_failed_is_said(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=2, files_per_prefix=2)
    (migration.root / MANIFESTS).mkdir()
    migration.prepare()
    args = migration.backend_args()
    for extra, words in [
        (["--failed-objects"], "--failed-objects needs --manifest-location"),
        (["--manifest-location", f"gs://{MANIFESTS}/m/"], "goes with --failed-objects"),
        (["--failed-objects", "--manifest-location", "s3://b/m/"], "not a Cloud Storage location"),
        (["--failed-objects", "--manifest-location", "gs://Bad_Bucket/m/"], "not a valid bucket"),
    ]:
        refused = tool("sts-requeue", *args, *extra, check=False)
        assert refused.returncode == 2, (extra, refused.stdout, refused.stderr)
        assert words in refused.stderr, refused.stderr
    nothing = tool(
        "sts-requeue", *args, "--failed-objects", "--manifest-location", f"gs://{MANIFESTS}/m/"
    )
    assert "No failed objects to re-run" in nothing.stdout
    assert not any((migration.root / MANIFESTS).iterdir())
    refused = tool("sts-verify", *args, "--objects", check=False)
    assert refused.returncode == 2
    assert "--objects goes with --requeue" in refused.stderr or "--manifest" in refused.stderr
