"""API calls per manager cycle against sts-emulator, as the number of
prefixes grows (most of them done). Run: python benches/api_calls.py [N ...]

The engine is seeded with one successful one-time job and operation per done
prefix (as a migration that is mostly finished leaves it); the rest wait.
One manager cycle (sync, start jobs, sync) then runs over HTTP and the
emulator's request counter tells how many calls it made.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import time
import urllib.request
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import sts_job_manager as sjm  # noqa: E402
from conftest import Emulator  # noqa: E402

PROJECT = "bench-project"
WAITING_SHARE = 0.01


def seed(root: Path, state: Path, count: int) -> None:
    prefixes = [f"logs/{i:07d}/" for i in range(count)]
    prefix_file = root.parent / "prefixes.json"
    prefix_file.write_text(json.dumps(prefixes))
    options = {"state": f"sqlite:{state}", "transfer": f"local:{root}"}
    sjm.prepare_tables(options, job_prefix_source_file=str(prefix_file))
    done = prefixes[: int(count * (1 - WAITING_SHARE))]
    spec = {
        "gcsDataSource": {"bucketName": "migration-source"},
        "gcsDataSink": {"bucketName": "migration-destination"},
    }
    jobs, ops, rows = [], [], []
    for index, prefix in enumerate(done):
        job = f"transferJobs/sts-jm-bench-{index}"
        op = f"transferOperations/transferJobs-sts-jm-bench-{index}-1"
        job_spec = {**spec, "objectConditions": {"includePrefixes": [prefix]}}
        jobs.append(
            (
                job,
                PROJECT,
                "ENABLED",
                json.dumps(
                    {
                        "name": job,
                        "projectId": PROJECT,
                        "transferSpec": job_spec,
                        "status": "ENABLED",
                    }
                ),
            )
        )
        ops.append(
            (
                op,
                job,
                PROJECT,
                "SUCCESS",
                "2026-01-01T01:00:00Z",
                json.dumps(
                    {
                        "name": op,
                        "projectId": PROJECT,
                        "transferSpec": job_spec,
                        "status": "SUCCESS",
                        "startTime": "2026-01-01T00:00:00Z",
                        "transferJobName": job,
                        "counters": {"objectsCopiedToSink": "10", "bytesCopiedToSink": "1000"},
                    }
                ),
            )
        )
        rows.append((op, prefix))
    with closing(sqlite3.connect(root / ".sts-engine" / "engine.db")) as db, db:
        db.executemany("INSERT INTO jobs (name, project_id, status, body) VALUES (?,?,?,?)", jobs)
        db.executemany(
            "INSERT INTO operations (name, job_name, project_id, status, end_time, body)"
            " VALUES (?,?,?,?,?,?)",
            ops,
        )
    with closing(sqlite3.connect(state)) as db, db:
        db.executemany("UPDATE sts_job SET status = 'done', job_name = ? WHERE prefix = ?", rows)


def requests(emulator: Emulator) -> int:
    with urllib.request.urlopen(f"{emulator.url}/_emulator/stats", timeout=10) as response:
        return json.loads(response.read())["requests"]


def measure(count: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "buckets"
        for bucket in ("migration-source", "migration-destination"):
            (root / bucket).mkdir(parents=True)
        emulator = Emulator(root)
        try:
            seed(root, Path(work) / "state.db", count)
            os.environ["STORAGE_TRANSFER_EMULATOR_HOST"] = emulator.host
            manager = sjm.Manager(
                state=f"sqlite:{Path(work) / 'state.db'}",
                transfer="sts",
                project=PROJECT,
                max_concurrent_jobs=20,
            )
            before = requests(emulator)
            started = time.perf_counter()
            manager.run_once()
            elapsed = time.perf_counter() - started
            return requests(emulator) - before, elapsed
        finally:
            emulator.stop()


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [1_000, 10_000, 30_000]
    print(f"{'prefixes':>9} {'API calls/cycle':>16} {'cycle s':>8}  ({WAITING_SHARE:.0%} waiting)")
    for count in counts:
        calls, elapsed = measure(count)
        print(f"{count:>9} {calls:>16} {elapsed:>8.2f}")


if __name__ == "__main__":
    main()
