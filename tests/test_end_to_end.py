"""The whole product on the embedded backends, through the installed tools."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from conftest import BIN, Migration, tool


def test_prepare_then_manager_copies_everything(migration: Migration) -> None:
    migration.prepare()
    assert {status for status, _ in migration.jobs().values()} == {"waiting"}

    result = tool(
        "sts-job-manager",
        *migration.backend_args(),
        "--sleep-timeout",
        "0.2",
        "--job-interval",
        "0.2",
        "--metrics-interval",
        "0.2",
        "--exit-when-done",
    )
    assert "every prefix is finished" in result.stderr

    migration.assert_copied()
    assert not (migration.destination / "elsewhere.txt").exists()
    jobs = migration.jobs()
    assert {status for status, _ in jobs.values()} == {"done"}
    assert all(name.startswith("transferOperations/") for _, name in jobs.values())
    done_rows = [row for row in migration.history() if row[1] == "done"]
    assert sorted(row[0] for row in done_rows) == sorted(migration.prefixes)
    results = json.loads(done_rows[0][3])
    assert results["status"] == "SUCCESS"
    assert int(results["counters"]["objectsCopiedToSink"]) == 5
    # One operation per prefix: nothing was started twice.
    prefixes = [
        op["transferSpec"]["objectConditions"]["includePrefixes"][0]
        for op in migration.operations()
    ]
    assert sorted(prefixes) == sorted(migration.prefixes)


def test_prepare_is_idempotent_and_refuses_bad_files(migration: Migration) -> None:
    migration.prepare()
    migration.prepare()
    assert len(migration.jobs()) == len(migration.prefixes)

    migration.prefix_file.write_text(json.dumps(["new/", "new/"]))
    result = tool(
        "sts-prepare-tables",
        *migration.state_args(),
        "--job-prefix-source-file",
        str(migration.prefix_file),
        check=False,
    )
    assert result.returncode == 2
    assert "appears twice" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(migration.jobs()) == len(migration.prefixes), "nothing half-loaded"


def test_missing_backends_and_tables_are_one_line_errors(
    migration: Migration, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ["GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    prepared = f"sqlite:{migration.root.parent / 'prepared.db'}"
    tool("sts-prepare-tables", "--state", prepared)
    # The README's exit codes: 2 for bad input (an option, or a state file
    # an option names that does not exist), 1 for a backend that fails.
    for args, code, expected in [
        ([], 2, "no Google Cloud project for BigQuery"),
        # No credentials here (and no network): STS is tried once, then refused.
        (["--state", prepared, "--project", "p"], 1, "Google"),
        (migration.backend_args(), 2, "sts-prepare-tables"),
        (["--max-concurrent-jobs", "many"], 2, "max-concurrent-jobs"),
        (["--no-such-flag"], 2, "no-such-flag"),
    ]:
        result = tool("sts-job-manager", *args, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_killed_manager_is_taken_over_after_restart(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=4000)
    args = [
        *migration.backend_args(),
        "--sleep-timeout",
        "0.2",
        "--job-interval",
        "0.2",
        "--metrics-interval",
        "0.2",
        "--exit-when-done",
    ]
    first = subprocess.Popen([str(BIN / "sts-job-manager"), *args], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while migration.active_operations() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    two_ran = migration.active_operations() >= 2
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert two_ran, "two operations never ran at once: nothing to recover"
    assert any(op["status"] == "IN_PROGRESS" for op in migration.operations())

    migration.set_faults()
    tool("sts-job-manager", *args)
    migration.assert_copied()
    assert {status for status, _ in migration.jobs().values()} == {"done"}
    assert all(op["status"] == "SUCCESS" for op in migration.operations())
    prefixes = [
        op["transferSpec"]["objectConditions"]["includePrefixes"][0]
        for op in migration.operations()
    ]
    assert len(prefixes) == len(set(prefixes)), "a prefix was started twice"


def test_sigterm_stops_the_loop_cleanly(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=2000)
    manager = subprocess.Popen(
        [
            str(BIN / "sts-job-manager"),
            *migration.backend_args(),
            "--sleep-timeout",
            "0.2",
            "--job-interval",
            "0.2",
            "--metrics-interval",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while migration.active_operations() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    running = migration.active_operations() >= 1
    manager.send_signal(signal.SIGTERM)
    _, stderr = manager.communicate(timeout=30)
    assert running, "no operation ever ran: the signal came before any work"
    assert manager.returncode == 0, stderr
    assert "stop requested" in stderr
