"""LOG_FORMAT=json: every stderr line is one JSON object Cloud Logging reads
(severity, message, time, the event's fields); text otherwise."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import BIN, FAST, Migration

SEVERITIES = {"DEBUG", "INFO", "WARNING", "ERROR"}


def run(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def json_lines(stderr: str) -> list[dict]:
    entries = []
    for line in stderr.splitlines():
        entry = json.loads(line)  # fails the test on any line that is not JSON
        assert entry["severity"] in SEVERITIES, line
        assert isinstance(entry["message"], str) and entry["time"].endswith("Z"), line
        entries.append(entry)
    return entries


def test_a_migration_with_failures_logs_only_json_lines(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(fail_objects_matching="data/p01/*")
    result = run(
        "sts-job-manager",
        *migration.backend_args(),
        *FAST,
        "--no-retry-on-job-error",
        "--exit-when-done",
        LOG_FORMAT="json",
        LOGLEVEL="DEBUG",
    )
    # Every line parses, whatever the failure logs (a failed prefix is in it).
    entries = json_lines(result.stderr)
    assert len(entries) >= 3, result.stderr
    # Structured fields stay typed, beside the message (the cycle's counts).
    numbers = {k for e in entries for k, v in e.items() if type(v) is int}
    assert numbers, result.stderr
    assert all(e.get("target", "sts_job_manager").startswith("sts_job_manager") for e in entries)

    # The tools' own error lines are JSON too, usage errors included.
    for name, args in [
        ("sts-pause-all-jobs", ["--max-concurrent-jobs", "3"]),
        ("sts-job-manager", ["--state", f"sqlite:{migration.root / 'none.db'}"]),
    ]:
        refused = run(name, *args, LOG_FORMAT="json")
        assert refused.returncode == 2, "bad input: exit 2 (README)"
        [entry] = json_lines(refused.stderr)
        assert entry["severity"] == "ERROR" and name in entry["message"]


def test_text_is_the_default(migration: Migration) -> None:
    refused = run("sts-pause-all-jobs", "--max-concurrent-jobs", "3")
    assert refused.stderr.startswith("sts-pause-all-jobs: error: unexpected argument")
