"""sts-status and State.status()/progress() on states whose numbers are known."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import FAST, Migration, tool
from synthetic_state import OBJECT_BYTES, OBJECTS_PER_PREFIX, make_state


def status_json(state: Path, *flags: str) -> dict:
    return json.loads(tool("sts-status", "--state", f"sqlite:{state}", "--json", *flags).stdout)


def test_status_json_gives_the_known_counts_and_an_estimate_while_prefixes_are_unlisted(
    tmp_path: Path,
) -> None:
    # All of it copied within the last 40 minutes: the rate is every byte
    # copied over the time since the first start, known here without the
    # product (the status is read between `asked` and `answered`).
    end, span = datetime.now(timezone.utc), timedelta(minutes=40)
    made = make_state(tmp_path / "state.db", 40, waiting_every=3, end=end, span=span)
    asked = datetime.now(timezone.utc)
    report = status_json(made.path, "--limit", "100")
    answered = datetime.now(timezone.utc)
    assert {k: v for k, v in report["prefixes"].items() if k != "total"} == made.counts
    assert report["prefixes"]["total"] == 40
    assert report["unlisted_prefixes"] == made.counts["waiting"] > 0
    assert report["bytes"]["found"] == made.bytes_found
    assert report["bytes"]["copied"] == made.bytes_copied
    assert report["objects"]["failed"] == made.objects_failed
    assert report["error_codes"] == made.error_codes
    assert report["failing_total"] == made.counts["error"]
    assert {f["status"] for f in report["failing"]} == {"error"}
    assert all(f["errors"] for f in report["failing"])
    # Unlisted prefixes: the ETA is an estimate from the finished prefixes' size.
    eta = report["eta"]
    assert eta["estimate"] is True, eta
    assert eta["basis"].startswith("estimate"), eta
    first_start = end - span
    slowest = made.bytes_copied / (answered - first_start).total_seconds()
    fastest = made.bytes_copied / (asked - first_start).total_seconds()
    assert slowest <= report["throughput"]["bytes_per_second"] <= fastest, report["throughput"]
    found = OBJECTS_PER_PREFIX * OBJECT_BYTES
    # Every prefix finds the same size, so the estimate is exact here.
    # Waiting: a whole prefix each; error (retried): its 3 failed objects;
    # running: what its last snapshot has not copied (3 of 4 quarters done).
    left = (
        made.counts["waiting"] * found
        + made.counts["error"] * 3 * OBJECT_BYTES
        + made.counts["running"] * (found - OBJECT_BYTES * (OBJECTS_PER_PREFIX * 3 // 4))
    )
    assert left / fastest <= eta["seconds"] <= left / slowest, (eta, left)


def test_no_eta_while_prefixes_are_unlisted_and_none_has_finished(migration: Migration) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=2000)
    sjm.Manager(migration.options(max_concurrent_jobs=1)).run_once()
    report = status_json(migration.state)
    assert report["prefixes"]["total"] == 6
    assert report["prefixes"]["done"] == 0
    assert report["unlisted_prefixes"] >= 5
    assert report["eta"]["seconds"] is None, report["eta"]
    assert "not listed" in report["eta"]["basis"]
    # State.progress() follows the same rule: its total ETA is unknown.
    progress = sjm.State(state=f"sqlite:{migration.state}").progress()
    total = progress[progress["scope"] == "total"].iloc[0]
    assert math.isnan(total["eta_seconds"])
    assert "not listed" in total["eta_basis"]


def test_text_report_and_the_failing_limit(tmp_path: Path) -> None:
    made = make_state(tmp_path / "state.db", 30)
    args = ["--state", f"sqlite:{made.path}", "--no-retry-on-job-error"]
    text = tool("sts-status", *args).stdout
    assert f"Prefixes: 30 total: {made.counts['done']} done" in text
    assert "ETA:" in text and "Rate:" in text
    assert "PERMISSION_DENIED x3" in text
    state = sjm.State(state=f"sqlite:{made.path}")
    assert state.status(limit=2)["failing_total"] == made.counts["error"]
    assert len(state.status(limit=2)["failing"]) == 2


def test_watch_redraws_until_nothing_is_left(migration: Migration) -> None:
    migration.prepare()
    tool("sts-job-manager", *migration.backend_args(), *FAST, "--exit-when-done")
    watched = tool("sts-status", *migration.state_args(), "--watch", "--interval", "0.1", "--json")
    lines = watched.stdout.strip().splitlines()
    assert len(lines) == 1, "a finished migration is drawn once and the watch ends"
    report = json.loads(lines[0])
    assert report["prefixes"]["done"] == 6
    assert report["eta"] == {"seconds": 0.0, "estimate": False, "basis": "nothing left to copy"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "0"], "--interval"),
        (["--limit", "x"], "--limit"),
        (["--no-such-flag"], "no-such-flag"),
    ],
)
def test_bad_status_flags_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = tool("sts-status", "--state", f"sqlite:{tmp_path / 's.db'}", *args, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_watch_ends_when_only_prefixes_out_of_retries_are_left(failed_migration: Migration) -> None:
    """A migration that finished with a prefix in error and no retry left: the
    watch ends, exit 4 (a wait that never ends fails this test at its timeout)."""
    result = tool(
        "sts-status",
        *failed_migration.state_args(),
        "--watch",
        "--interval",
        "0.1",
        "--json",
        "--max-retries",
        "0",
        timeout=60,
        check=False,
    )
    # Ended with errors: the manager's exit code for that, 4, and the reason.
    assert result.returncode == 4, result.stderr
    assert "ended with 1 prefixes in error" in result.stderr
    (last,) = result.stdout.strip().splitlines()[-1:]
    assert json.loads(last)["prefixes"]["error"] == 1
