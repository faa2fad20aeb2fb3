"""A generated migration state of any size, with totals known in advance.

The tables are made by ``sjm.prepare_tables`` and filled with Python's
sqlite3 in a child process that never imports the package (one SQLite copy
per process: see tests/test_packaging.py); everything read afterwards goes
through the Rust store.
History rows look like the manager's: a start row without results, then
progress snapshots of the prefix's operation (TransferOperation JSON with
cumulative counters), the last one SUCCESS or FAILED (with errorBreakdowns).

    python tests/synthetic_state.py STATE.db PREFIXES [SNAPSHOTS]
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

OBJECT_BYTES = 1_000_000
OBJECTS_PER_PREFIX = 100


@dataclass
class Synthetic:
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    history_rows: int = 0
    bytes_found: int = 0
    bytes_copied: int = 0
    objects_failed: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)


def stamp(at: datetime) -> str:
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


def make_state(
    path: Path,
    prefixes: int,
    snapshots: int = 3,
    *,
    waiting_every: int = 0,
    end: datetime | None = None,
    span: timedelta = timedelta(hours=12),
    every: int = 10,
) -> Synthetic:
    """`prefixes` prefixes: every `every`-th in error, every `every`-th (+1) running,
    every `waiting_every`-th (+2, when > 0) waiting (never started), the
    rest done. Each started prefix has one start row and `snapshots`
    snapshots spread over `span` ending at `end` (default: now)."""
    import sts_job_manager as sjm

    sjm.prepare_tables(state=f"sqlite:{path}")
    request = {
        "path": str(path),
        "prefixes": prefixes,
        "snapshots": snapshots,
        "waiting_every": waiting_every,
        "every": every,
        "end": (end or datetime.now(timezone.utc)).isoformat(),
        "span": span.total_seconds(),
    }
    filled = subprocess.run(
        [sys.executable, __file__, "--fill", json.dumps(request)],
        capture_output=True,
        text=True,
        check=True,
    )
    made = json.loads(filled.stdout)
    made["path"] = Path(made["path"])
    # The manager folds each history row as it writes it (the figures
    # table); rows written here are folded as a taken-over history is.
    sjm.prepare_tables(state=f"sqlite:{path}")
    return Synthetic(**made)


def _fill(
    path: Path,
    prefixes: int,
    snapshots: int = 3,
    *,
    waiting_every: int = 0,
    end: datetime | None = None,
    span: timedelta = timedelta(hours=12),
    every: int = 10,
) -> Synthetic:
    import sqlite3  # this child process never imports sts_job_manager

    end = end or datetime.now(timezone.utc)
    begin = end - span
    statuses = ["waiting", "running", "paused", "done", "error"]
    result = Synthetic(path=path, counts=dict.fromkeys(statuses, 0))
    found = OBJECT_BYTES * OBJECTS_PER_PREFIX

    def status_of(i: int) -> str:
        if i % every == 0:
            return "error"
        if i % every == 1:
            return "running"
        if waiting_every and i % waiting_every == 2:
            return "waiting"
        return "done"

    def jobs():
        for i in range(prefixes):
            status = status_of(i)
            result.counts[status] += 1
            name = None if status == "waiting" else f"transferOperations/op-{i:07d}"
            yield f"data/{i:07d}/", status, name, stamp(end)

    def history():
        for i in range(prefixes):
            status = status_of(i)
            if status == "waiting":
                continue
            prefix, op = f"data/{i:07d}/", f"transferOperations/op-{i:07d}"
            started = begin + (span / 2) * (i / max(prefixes, 1))
            result.history_rows += 1
            yield prefix, "running", op, None, stamp(started)
            # Finished prefixes end spread over the second half of the span;
            # running ones have their latest snapshot now.
            finish = (
                end if status == "running" else started + (end - started) * (0.5 + (i % 97) / 194)
            )
            for k in range(1, snapshots + 1):
                last = k == snapshots
                at = started + (finish - started) * k / snapshots
                copied_objects = OBJECTS_PER_PREFIX * k // snapshots
                failed_objects = 0
                op_status = "IN_PROGRESS"
                if last and status == "error":
                    failed_objects, copied_objects = 3, OBJECTS_PER_PREFIX - 3
                    op_status = "FAILED"
                elif last and status == "done":
                    op_status = "SUCCESS"
                elif status == "running":
                    copied_objects = OBJECTS_PER_PREFIX * k // (snapshots + 1)
                body = {
                    "name": op,
                    "projectId": "synthetic",
                    "status": op_status,
                    "startTime": stamp(started),
                    "transferSpec": {"objectConditions": {"includePrefixes": [prefix]}},
                    "counters": {
                        "objectsFoundFromSource": str(OBJECTS_PER_PREFIX),
                        "bytesFoundFromSource": str(found),
                        "objectsCopiedToSink": str(copied_objects),
                        "bytesCopiedToSink": str(copied_objects * OBJECT_BYTES),
                        "objectsFromSourceFailed": str(failed_objects),
                        "bytesFromSourceFailed": str(failed_objects * OBJECT_BYTES),
                    },
                }
                if op_status in ("SUCCESS", "FAILED"):
                    body["endTime"] = stamp(at)
                if failed_objects:
                    code = "PERMISSION_DENIED" if i % 20 == 0 else "NOT_FOUND"
                    body["errorBreakdowns"] = [
                        {
                            "errorCode": code,
                            "errorCount": str(failed_objects),
                            "errorLogEntries": [
                                {"url": f"gs://src/{prefix}obj-{n}", "errorDetails": ["denied"]}
                                for n in range(failed_objects)
                            ],
                        }
                    ]
                if last:
                    result.bytes_found += found
                    result.bytes_copied += copied_objects * OBJECT_BYTES
                    result.objects_failed += failed_objects
                    if failed_objects:
                        result.error_codes[code] = result.error_codes.get(code, 0) + failed_objects
                row_status = {"SUCCESS": "done", "FAILED": "error"}.get(op_status, "running")
                result.history_rows += 1
                yield prefix, row_status, op, json.dumps(body), stamp(at)

    with sqlite3.connect(path, timeout=600) as db:
        db.executemany(
            "INSERT INTO sts_job (prefix, status, job_name, last_updated) VALUES (?, ?, ?, ?)",
            jobs(),
        )
        db.executemany(
            "INSERT INTO sts_job_history (prefix, status, job_name, operation_results, timestamp)"
            " VALUES (?, ?, ?, ?, ?)",
            history(),
        )
    return result


if __name__ == "__main__":
    if sys.argv[1] == "--fill":
        asked = json.loads(sys.argv[2])
        made = _fill(
            Path(asked["path"]),
            asked["prefixes"],
            asked["snapshots"],
            waiting_every=asked["waiting_every"],
            every=asked["every"],
            end=datetime.fromisoformat(asked["end"]),
            span=timedelta(seconds=asked["span"]),
        )
        made_dict = asdict(made)
        made_dict["path"] = str(made.path)
        print(json.dumps(made_dict))
    else:
        made = make_state(
            Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 3
        )
        print(f"{made.history_rows:,} history rows; prefixes: {made.counts}")
