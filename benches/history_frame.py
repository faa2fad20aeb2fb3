"""How long sjm.State.history() takes over a large history table.

    python benches/history_frame.py [ROWS]   (default 1,000,000)

The table is filled directly with sqlite3 (set-up only; the timed read goes
through the Rust state store like any other). Rows look like the manager's
progress rows: a running status, an operation name and a TransferOperation
JSON of about 450 bytes.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sts_job_manager as sjm


def fill(database: Path, rows: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with closing(sqlite3.connect(database)) as db, db:

        def generate():
            for i in range(rows):
                prefix = f"logs/{i % 10_000:05d}/"
                operation = f"transferOperations/transferJobs-sts-jm-{i % 10_000:05d}-{i}"
                results = json.dumps(
                    {
                        "name": operation,
                        "projectId": "bench-project",
                        "status": "IN_PROGRESS",
                        "transferSpec": {
                            "gcsDataSource": {"bucketName": "migration-source"},
                            "gcsDataSink": {"bucketName": "migration-destination"},
                            "objectConditions": {"includePrefixes": [prefix]},
                        },
                        "counters": {
                            "objectsFoundFromSource": str(1000 + i % 7),
                            "bytesFoundFromSource": str(10_000_000 + i),
                            "objectsCopiedToSink": str(i % 1000),
                            "bytesCopiedToSink": str(10_000 * (i % 1000)),
                        },
                        "startTime": "2026-01-01T00:00:00Z",
                        "transferJobName": f"transferJobs/sts-jm-{i % 10_000:05d}",
                    }
                )
                stamp = (start + timedelta(microseconds=i)).isoformat().replace("+00:00", "Z")
                yield prefix, "running", operation, results, stamp

        db.executemany(
            "INSERT INTO sts_job_history (prefix, status, job_name, operation_results, timestamp)"
            " VALUES (?, ?, ?, ?, ?)",
            generate(),
        )


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "state.db"
        options = sjm.Options(state=f"sqlite:{database}", transfer=f"local:{tmp}")
        sjm.prepare_tables(options)
        fill(database, rows)
        state = sjm.State(options)
        for attempt in range(3):
            started = time.perf_counter()
            table = state.history_arrow()
            arrow = time.perf_counter() - started
            frame = state.history()
            total = time.perf_counter() - started - arrow
            assert len(frame) == rows and table.num_rows == rows
            print(
                f"attempt {attempt + 1}: {rows:,} history rows: "
                f"pyarrow.Table {arrow:.2f} s, pandas DataFrame {total:.2f} s"
            )


if __name__ == "__main__":
    main()
