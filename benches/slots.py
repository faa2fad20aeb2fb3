"""Slot use at full speed: N prefixes of ~30-second operations on 200 slots,
over HTTP to sts-emulator with STS's quotas enforced, with and without job
reuse. Prints the wall time, the ideal (N x 30 s / 200), the mean and
minimum operations in progress over the steady part (from the moment 200
first ran to the moment fewer than 200 prefixes were left), and the STS
requests by method (the strict layer counts them).

Run: python benches/slots.py [N]   (default 2000; about 6 minutes per mode)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import BIN, Emulator  # noqa: E402

PROJECT = "slots-project"
SLOTS = 200
SECONDS = 30
OBJECT_BYTES = 30_000


def in_progress(engine: Path) -> tuple[int, int]:
    """(operations in progress, operations finished) in the engine."""
    with closing(sqlite3.connect(engine, timeout=30)) as db:
        rows = dict(db.execute("SELECT status, COUNT(*) FROM operations GROUP BY status"))
    return rows.get("IN_PROGRESS", 0), rows.get("SUCCESS", 0) + rows.get("FAILED", 0)


def run(count: int, reuse: bool) -> dict:
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "buckets"
        for p in range(count):
            folder = root / "migration-source" / f"p{p:05d}"
            folder.mkdir(parents=True)
            (folder / "object.bin").write_bytes(b"x" * OBJECT_BYTES)
        (root / "migration-destination").mkdir(parents=True)
        state = Path(work) / "state.db"
        prefixes = Path(work) / "prefixes.json"
        prefixes.write_text(json.dumps([f"p{p:05d}/" for p in range(count)]))
        subprocess.run(
            [
                str(BIN / "sts-prepare-tables"),
                "--state",
                f"sqlite:{state}",
                "--job-prefix-source-file",
                str(prefixes),
            ],
            check=True,
            capture_output=True,
        )
        emulator = Emulator(
            root,
            "--sts-quotas",
            "--max-in-progress",
            str(SLOTS),
            "--bytes-per-second",
            str(OBJECT_BYTES // SECONDS),
        )
        samples: list[tuple[float, int, int]] = []
        stop = threading.Event()
        engine = root / ".sts-engine" / "engine.db"

        def sample() -> None:
            while not stop.wait(1.0):
                try:
                    samples.append((time.monotonic(), *in_progress(engine)))
                except sqlite3.Error:
                    pass

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            env = {**os.environ, "STORAGE_TRANSFER_EMULATOR_HOST": emulator.host}
            args = [
                str(BIN / "sts-job-manager"),
                "--state",
                f"sqlite:{state}",
                "--transfer",
                "sts",
                "--project",
                PROJECT,
                "--max-concurrent-jobs",
                str(SLOTS),
                "--job-interval",
                "2",
                "--metrics-interval",
                "1",
                "--sleep-timeout",
                "0.5",
                "--exit-when-done",
            ]
            if not reuse:
                args.append("--no-job-reuse")
            started = time.monotonic()
            sampler.start()
            result = subprocess.run(args, env=env, capture_output=True, text=True)
            wall = time.monotonic() - started
            stop.set()
            sampler.join()
            if result.returncode != 0:
                raise SystemExit(result.stderr[-2000:])
            methods = emulator.stats()["methods"]
        finally:
            stop.set()
            emulator.stop()
    full = next((i for i, s in enumerate(samples) if s[1] >= SLOTS), None)
    # The tail: fewer prefixes left than slots.
    tail = next((i for i, s in enumerate(samples) if count - s[2] < SLOTS), len(samples))
    steady = [s[1] for s in samples[full:tail]] if full is not None else []
    return {
        "wall": wall,
        "ideal": count * SECONDS / SLOTS,
        "steady_mean": sum(steady) / len(steady) if steady else 0.0,
        "steady_min": min(steady) if steady else 0,
        "peak": max((s[1] for s in samples), default=0),
        "methods": {k.split(".", 1)[1]: v for k, v in sorted(methods.items())},
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for reuse in (True, False):
        r = run(count, reuse)
        mode = "job reuse" if reuse else "--no-job-reuse"
        print(
            f"{mode}: {count} prefixes, wall {r['wall']:.0f} s"
            f" (ideal {r['ideal']:.0f} s), in progress over the steady part mean"
            f" {r['steady_mean']:.1f} min {r['steady_min']} (peak {r['peak']}) of {SLOTS}"
        )
        print(f"  requests: {json.dumps(r['methods'])}")


if __name__ == "__main__":
    main()
