"""One state, every view, the same numbers (README, "The figures").

The state holds retried failures, a prefix fixed by its retry, a re-run
prefix, a stalled prefix, a verified then tampered (and re-copied) prefix,
objects already at the destination and a prefix never listed. The
expected figures below are worked out by hand from the rows written, not by
the code under test."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_notebooks import _jupyter_env, run_notebook  # noqa: F401 (the fixture is used)

import sts_job_manager as sjm
from conftest import make_migration, sql, tool
from synthetic_state import stamp

SIZE = 1000  # bytes per object
NOW = datetime.now(timezone.utc)

# Per prefix, by hand: (found, copied, skipped, failing now, failed attempts, left).
EXPECTED = {
    "ok/": (100, 100, 0, 0, 0, 0),
    "retry/": (100, 60, 0, 40, 160, 0),
    "fixed/": (100, 100, 0, 0, 10, 0),
    "rerun/": (100, 100, 0, 0, 0, 0),
    "tampered/": (100, 100, 0, 0, 0, 0),
    "stalled/": (100, 30, 0, 0, 0, 70),
    "moving/": (100, 50, 0, 0, 0, 50),
    "pre/": (100, 80, 20, 0, 0, 0),
    "wait/": (0, 0, 0, 0, 0, 0),
}
# What the source holds: 100 objects under each prefix, wait/ included.
SOURCE_OBJECTS = 100 * len(EXPECTED)
NAMES = ["found", "copied", "skipped", "failed", "failed_attempts", "left"]
TOTAL = {name: sum(v[i] for v in EXPECTED.values()) for i, name in enumerate(NAMES)}


def operation(prefix: str, n: int, status: str, start: datetime, **counts: int) -> dict:
    """A TransferOperation snapshot; `counts`: found, copied, skipped, failed (objects)."""
    found, copied = counts.get("found", 100), counts.get("copied", 0)
    skipped, failed = counts.get("skipped", 0), counts.get("failed", 0)
    body: dict = {
        "name": f"transferOperations/{prefix.strip('/')}-{n}",
        "projectId": "figures",
        "status": status,
        "startTime": stamp(start),
        "transferSpec": {"objectConditions": {"includePrefixes": [prefix]}},
        "counters": {
            "objectsFoundFromSource": str(found),
            "bytesFoundFromSource": str(found * SIZE),
            "objectsCopiedToSink": str(copied),
            "bytesCopiedToSink": str(copied * SIZE),
            "objectsFromSourceSkippedBySync": str(skipped),
            "bytesFromSourceSkippedBySync": str(skipped * SIZE),
            "objectsFromSourceFailed": str(failed),
            "bytesFromSourceFailed": str(failed * SIZE),
        },
    }
    if failed:
        code = "PERMISSION_DENIED" if prefix == "retry/" else "NOT_FOUND"
        body["errorBreakdowns"] = [
            {
                "errorCode": code,
                "errorCount": str(failed),
                "errorLogEntries": [
                    {"url": f"gs://src/{prefix}obj-{i}", "errorDetails": ["no"]} for i in range(5)
                ],
            }
        ]
    return body


def make(path: Path) -> None:
    prefixes = list(EXPECTED)
    sjm.prepare_tables(state=f"sqlite:{path}", prefixes=prefixes)
    history: list[tuple] = []
    jobs: dict[str, tuple[str, str | None]] = {}

    def attempt(prefix: str, n: int, minutes_ago: float, outcome: str, **counts: int) -> None:
        """One finished attempt: a start row, a halfway snapshot, the last one."""
        start = NOW - timedelta(minutes=minutes_ago)
        op = operation(prefix, n, "IN_PROGRESS", start, **counts)
        name = op["name"]
        history.append((prefix, "running", name, None, stamp(start)))
        half = {
            k: (v // 2 if k.startswith(("objectsCopied", "bytesCopied")) else v)
            for k, v in ((k, int(v)) for k, v in op["counters"].items())
        }
        halfway = dict(op, counters={k: str(v) for k, v in half.items()})
        halfway.pop("errorBreakdowns", None)
        history.append(
            (prefix, "running", name, json.dumps(halfway), stamp(start + timedelta(minutes=1)))
        )
        final = operation(prefix, n, outcome, start, **counts)
        end = start + timedelta(minutes=2)
        final["endTime"] = stamp(end)
        status = "done" if outcome == "SUCCESS" else "error"
        history.append((prefix, status, name, json.dumps(final), stamp(end)))
        jobs[prefix] = (status, name)

    def running(prefix: str, minutes_ago: list[float], copied: list[int]) -> None:
        start = NOW - timedelta(minutes=minutes_ago[0] + 1)
        name = operation(prefix, 1, "IN_PROGRESS", start)["name"]
        history.append((prefix, "running", name, None, stamp(start)))
        for ago, c in zip(minutes_ago, copied):
            op = operation(prefix, 1, "IN_PROGRESS", start, copied=c)
            history.append(
                (prefix, "running", name, json.dumps(op), stamp(NOW - timedelta(minutes=ago)))
            )
        jobs[prefix] = ("running", name)

    attempt("ok/", 1, 100, "SUCCESS", copied=100)
    # Four attempts, 40 objects failing in each: out of retries (3).
    attempt("retry/", 1, 90, "FAILED", copied=60, failed=40)
    for n in (2, 3, 4):
        attempt("retry/", n, 90 - 10 * n, "FAILED", skipped=60, failed=40)
    attempt("fixed/", 1, 80, "FAILED", copied=90, failed=10)
    attempt("fixed/", 2, 70, "SUCCESS", skipped=90, copied=10)
    # Run again after success: everything skipped.
    attempt("rerun/", 1, 80, "SUCCESS", copied=100)
    attempt("rerun/", 2, 40, "SUCCESS", skipped=100)
    # Verified, then tampered with at the destination and re-copied with
    # overwrite: 100 copied twice, 100 in place.
    attempt("tampered/", 1, 75, "SUCCESS", copied=100)
    attempt("tampered/", 2, 30, "SUCCESS", copied=100)
    attempt("pre/", 1, 60, "SUCCESS", copied=80, skipped=20)
    # No counter moved for 20 minutes; moving/ moves every minute.
    running("stalled/", [40, 30, 20, 10, 1], [10, 20, 30, 30, 30])
    running("moving/", [5, 4, 3, 2, 1, 0.5], [10, 20, 30, 40, 45, 50])

    sql(
        path,
        "INSERT INTO sts_job_history (prefix, status, job_name, operation_results, timestamp)"
        " VALUES (?, ?, ?, ?, ?)",
        history,
        many=True,
    )
    sql(
        path,
        "UPDATE sts_job SET status = ?, job_name = ?, last_updated = ? WHERE prefix = ?",
        [(s, n, stamp(NOW - timedelta(minutes=1)), p) for p, (s, n) in jobs.items()],
        many=True,
    )
    # The tampered prefix was verified between its two attempts (the
    # verification is stale now: the prefix was transferred since).
    state = sjm.State(state=f"sqlite:{path}")
    assert state.verification().empty
    sql(
        path,
        "CREATE TABLE IF NOT EXISTS sts_job_verification (prefix TEXT NOT NULL PRIMARY KEY,"
        " result TEXT NOT NULL, objects_compared INTEGER NOT NULL, missing INTEGER NOT NULL,"
        " different INTEGER NOT NULL, checked_at TEXT NOT NULL, offending_objects TEXT NOT NULL)",
    )
    sql(
        path,
        "INSERT INTO sts_job_verification VALUES (?, 'verified', 100, 0, 0, ?, '[]')",
        ["tampered/", stamp(NOW - timedelta(minutes=50))],
    )


@pytest.fixture(scope="module")
def state_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("figures") / "state.db"
    make(path)
    return path


def amounts(report: dict, kind: str) -> dict:
    return {name: report[kind][name] for name in NAMES}


def test_every_view_gives_the_same_figures_and_none_exceeds_the_source(state_path: Path) -> None:
    cli = json.loads(tool("sts-status", "--state", f"sqlite:{state_path}", "--json").stdout)
    state = sjm.State(state=f"sqlite:{state_path}")
    api = state.status()
    objects = TOTAL
    byte_totals = {k: v * SIZE for k, v in TOTAL.items()}
    for report in (cli, api):
        assert amounts(report, "objects") == objects
        assert amounts(report, "bytes") == byte_totals
    # Nothing above what the source holds; found is what was listed.
    assert objects["found"] <= SOURCE_OBJECTS
    assert all(v <= objects["found"] for k, v in objects.items() if k != "failed_attempts")

    progress = state.progress()
    rows = progress[progress["scope"] == "prefix"].set_index("prefix")
    for prefix, expected in EXPECTED.items():
        got = tuple(int(rows.loc[prefix, f"objects_{name}"]) for name in NAMES)
        assert got == expected, prefix
        got_bytes = tuple(int(rows.loc[prefix, f"bytes_{name}"]) for name in NAMES)
        assert got_bytes == tuple(v * SIZE for v in expected), prefix
    total = progress[progress["scope"] == "total"].iloc[0]
    assert {name: int(total[f"objects_{name}"]) for name in NAMES} == objects
    assert {name: int(total[f"bytes_{name}"]) for name in NAMES} == byte_totals
    # The total's ETA is the report's (taken a moment apart: the rate moves).
    assert total["eta_basis"] == api["eta"]["basis"]
    assert total["eta_seconds"] == pytest.approx(api["eta"]["seconds"], rel=0.05)

    last = state.timeline().progress.iloc[-1]
    assert int(last["objects_found"]) == objects["found"]
    assert int(last["objects_copied"]) == objects["copied"]
    assert int(last["bytes_copied"]) == byte_totals["copied"]
    assert int(last["objects_failed"]) == objects["failed"]
    assert int(last["objects_failed_attempts"]) == objects["failed_attempts"]

    failures = state.failures()
    per_code = failures.drop_duplicates(["prefix", "error_code"])
    # Failing now: retry/'s 40, not 40 per attempt; fixed/ fails no more.
    assert int(per_code["error_count"].sum()) == objects["failed"] == 40
    assert sorted(per_code["prefix"].astype(str)) == ["retry/"]
    assert int(per_code["failed_attempts"].sum()) == EXPECTED["retry/"][4]
    assert api["error_codes"] == {"PERMISSION_DENIED": 40}


def test_out_of_retries_needs_action_and_the_stall_is_the_one_that_stalled(
    state_path: Path,
) -> None:
    report = json.loads(tool("sts-status", "--state", f"sqlite:{state_path}", "--json").stdout)
    assert report["needs_action"] == ["retry/"]
    assert report["needs_action_total"] == 1
    assert [s["prefix"] for s in report["stalled"]] == ["stalled/"]
    assert report["stalled_total"] == 1
    # Bytes left: the two running prefixes and wait/ (unlisted; estimated
    # from the finished ones), never retry/'s 40 failing objects.
    eta = report["eta"]
    assert eta["estimate"] is True
    assert "1 prefixes out of retries left out" in eta["basis"]
    rate = report["throughput"]["bytes_per_second"]
    finished = [EXPECTED[p][0] * SIZE for p in ("ok/", "fixed/", "rerun/", "tampered/", "pre/")]
    left = (70 + 50) * SIZE + sum(finished) / len(finished)
    assert eta["seconds"] == pytest.approx(left / rate, rel=1e-6)
    text = tool("sts-status", "--state", f"sqlite:{state_path}").stdout
    assert "Needs action: 1 prefixes out of retries" in text
    assert "40 failed now (170 failed attempts)" in text


def test_the_notebooks_headlines_are_the_reports(state_path: Path, tmp_path: Path) -> None:
    report = sjm.State(state=f"sqlite:{state_path}").status()
    state = {"state": f"sqlite:{state_path}"}
    failures = run_notebook("failure_analysis.ipynb", tmp_path, STATE=state)
    assert failures["objects_failing_now"] == report["objects"]["failed"] == 40
    assert failures["failed_attempts"] == report["objects"]["failed_attempts"] == 170
    assert sum(failures["error_codes"].values()) == 40
    progress = run_notebook("migration_progress.ipynb", tmp_path, STATE=state)
    assert progress["bytes_found"] == report["bytes"]["found"] == TOTAL["found"] * SIZE
    assert progress["bytes_copied"] == report["bytes"]["copied"] == TOTAL["copied"] * SIZE
    assert progress["bytes_copied_over_time_last"] == progress["bytes_copied"]
    assert progress["stalled"] == ["stalled/"]
    assert progress["needs_action"] == ["retry/"]


def test_the_managers_progress_is_the_figures_every_view_reports(tmp_path: Path) -> None:
    """The cycle summary's progress (the quickstart line, Airflow's XCom) is
    the same figures as sts-status: a prefix run again counts its objects
    once, as copied by the first run, not found twice or skipped."""
    migration = make_migration(tmp_path, prefixes=3, files_per_prefix=4, size=100)
    migration.prepare()
    options = migration.options()
    sjm.Manager(options).run_until_done(timeout=120)
    sjm.requeue(options, prefixes=[migration.prefixes[0]])
    summary = sjm.Manager(options).run_until_done(timeout=120)
    report = sjm.State(options).status()
    progress = summary["progress"]
    for kind in ("objects", "bytes"):
        for name in ("found", "copied", "skipped", "failed"):
            assert progress[f"{kind}_{name}"] == report[kind][name], (kind, name)
    # By hand: every object found once and copied once.
    assert progress["objects_found"] == progress["objects_copied"] == len(migration.objects)
    assert progress["objects_skipped"] == 0
