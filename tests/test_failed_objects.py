"""Every failed object by name: jobs log failed copies to Cloud Logging
(loggingConfig), the manager reads the entries back (entries.list, on the
local engine or through the emulator's Logging v2 stand-in, strict against
Google's discovery document) into the failed-objects table, and
``sjm.State.failed_objects()`` names each object once, with its code."""

from __future__ import annotations

import json
import time
import urllib.error
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import Emulator, Migration, make_migration, tool

PROJECT = "logs-project"
DENIED = "*/deny/*"

# Names a CSV or a Logging filter must quote: commas, quotes, spaces, unicode.
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
    """Four prefixes; seven objects in two of them fail with PERMISSION_DENIED."""
    migration = make_migration(base, prefixes=4, files_per_prefix=3)
    for name in ODD_NAMES:
        path = migration.source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        migration.objects[name] = name.encode()
    migration.prepare()
    return migration


def denied_rows(frame) -> list[tuple[str, str, str, str]]:
    return sorted(
        zip(frame["prefix"], frame["object"], frame["action"], frame["error_code"], strict=True)
    )


EXPECTED = sorted(
    (name[: len("data/p01/")], name, "COPY", "PERMISSION_DENIED") for name in ODD_NAMES
)


def test_failed_objects_are_named_once_each_with_their_code(tmp_path: Path) -> None:
    migration = with_denied_objects(tmp_path)
    migration.set_faults(fail_objects_matching=DENIED, error_code="PERMISSION_DENIED")
    summary = sjm.Manager(migration.options(no_retry_on_job_error=True)).run_until_done(timeout=120)
    assert summary["failed_count"] == 2
    assert summary["failed_objects_awaited"] == 0
    # Every job the manager made asks STS to log failed copies.
    for job in migration.engine_jobs():
        assert job["loggingConfig"] == {"logActions": ["COPY"], "logActionStates": ["FAILED"]}
    frame = sjm.State(migration.options()).failed_objects()
    assert list(frame.columns) == [
        "prefix",
        "object",
        "action",
        "error_code",
        "message",
        "operation",
        "time",
    ]
    assert denied_rows(frame) == EXPECTED
    ops = {op["name"]: op for op in migration.operations()}
    for operation, prefix in zip(frame["operation"], frame["prefix"], strict=True):
        assert ops[operation]["transferSpec"]["objectConditions"]["includePrefixes"] == [prefix]
    assert frame["time"].notna().all()
    # sts-status counts them.
    report = json.loads(tool("sts-status", *migration.state_args(), "--json").stdout)
    assert report["failed_objects_recorded"] == len(ODD_NAMES)
    text = tool("sts-status", *migration.state_args()).stdout
    assert f"Failed objects recorded by name: {len(ODD_NAMES)}" in text


def test_no_object_logs_sets_no_logging_and_reads_nothing(tmp_path: Path) -> None:
    migration = with_denied_objects(tmp_path)
    migration.set_faults(fail_objects_matching=DENIED)
    sjm.Manager(migration.options(no_retry_on_job_error=True, no_object_logs=True)).run_until_done(
        timeout=120
    )
    assert all("loggingConfig" not in job for job in migration.engine_jobs())
    assert sjm.State(migration.options()).failed_objects().empty


def test_late_entries_are_read_at_a_later_sync(tmp_path: Path) -> None:
    migration = with_denied_objects(tmp_path)
    # Entries are written, but Logging shows none of them yet.
    migration.set_faults(fail_objects_matching=DENIED, withhold_logs=True)
    manager = sjm.Manager(migration.options(no_retry_on_job_error=True))
    deadline = time.monotonic() + 120
    while True:
        summary = manager.run_once()
        counts = summary["counts"]
        if counts["waiting"] == counts["running"] == 0 and counts["error"] == 2:
            break
        assert time.monotonic() < deadline, summary
        time.sleep(0.2)
    # Both failed operations are awaited: the migration is not done yet.
    assert summary["failed_objects_awaited"] == 2
    assert not summary["done"]
    assert sjm.State(migration.options()).failed_objects().empty
    # The entries arrive late; a later sync reads them, and the end comes.
    migration.set_faults(fail_objects_matching=DENIED, withhold_logs=False)
    summary = manager.run_until_done(timeout=120)
    assert summary["failed_objects_awaited"] == 0
    assert denied_rows(sjm.State(migration.options()).failed_objects()) == EXPECTED


@pytest.fixture
def logging_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    migration = with_denied_objects(tmp_path)
    running = Emulator(migration.root)
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", running.host)
    monkeypatch.setenv("LOGGING_EMULATOR_HOST", running.host)
    yield migration, running
    running.stop()


def test_names_round_trip_through_sts_and_cloud_logging_over_http(logging_emulator) -> None:
    migration, emulator = logging_emulator
    migration.set_faults(fail_objects_matching=DENIED, error_code="PERMISSION_DENIED")
    options = migration.options(transfer="sts", project=PROJECT, no_retry_on_job_error=True)
    sjm.Manager(options).run_until_done(timeout=120)
    frame = sjm.State(options).failed_objects()
    assert denied_rows(frame) == EXPECTED
    # Read with entries.list, checked against logging.v2.json (the fixture
    # fails the test on any request the discovery document refuses).
    methods = emulator.stats()["methods"]
    assert methods.get("logging.entries.list", 0) >= 1
    # One filter for both failed operations: as many reads as syncs that
    # found something awaited, not one per operation.
    assert methods["logging.entries.list"] <= 2


def test_the_emulator_pages_filters_and_enforces_the_read_quota(logging_emulator) -> None:
    migration, emulator = logging_emulator
    migration.set_faults(fail_objects_matching=DENIED)
    options = migration.options(transfer="sts", project=PROJECT, no_retry_on_job_error=True)
    sjm.Manager(options).run_until_done(timeout=120)
    operations = sorted(set(sjm.State(options).failed_objects()["operation"]))
    assert len(operations) == 2
    log = f"projects/{PROJECT}/logs/storagetransfer.googleapis.com%2Ftransfer_activity"
    names = " OR ".join(json.dumps(o) for o in operations)
    request = {
        "resourceNames": [f"projects/{PROJECT}"],
        "filter": f'logName="{log}" AND jsonPayload.operation=({names})',
        "pageSize": 3,
    }
    seen: list[str] = []
    pages = 0
    while True:
        page = emulator.call("POST", "/v2/entries:list", request)
        pages += 1
        for entry in page["entries"]:
            assert entry["resource"]["type"] == "storage_transfer_job"
            assert entry["severity"] == "ERROR"
            payload = entry["jsonPayload"]
            assert (
                payload["@type"]
                == "type.googleapis.com/google.storagetransfer.logging.TransferActivityLog"
            )
            seen.append(payload["sourceObject"]["gcsObject"]["objectKey"])
        if "nextPageToken" not in page:
            break
        request["pageToken"] = page["nextPageToken"]
    assert pages == 3
    assert sorted(seen) == sorted(ODD_NAMES)
    # One operation only.
    request = {**request, "filter": f"jsonPayload.operation={json.dumps(operations[0])}"}
    request.pop("pageToken")
    request["pageSize"] = 100
    one = emulator.call("POST", "/v2/entries:list", request)["entries"]
    assert 0 < len(one) < len(ODD_NAMES)
    # The read quota, switched on: past it, 429 RESOURCE_EXHAUSTED.
    emulator.set_faults(quotas={"logging_read_per_minute": 1})
    emulator.call("POST", "/v2/entries:list", request)
    with pytest.raises(urllib.error.HTTPError) as refused:
        emulator.call("POST", "/v2/entries:list", request)
    assert refused.value.code == 429
    assert "logging.googleapis.com" in refused.value.read().decode()
