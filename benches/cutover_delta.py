"""A delta pass against a full re-run, on the local engine.

    python benches/cutover_delta.py [PREFIXES] [FILES_PER_PREFIX] [SIZE] [CHANGED_PERCENT]

Makes PREFIXES x FILES_PER_PREFIX objects of SIZE bytes (last modified a day
ago), migrates them with `sts-cutover` (pass 1 and one delta), rewrites
CHANGED_PERCENT % of them, then times (a) one delta pass (`sts-cutover
--until-objects 0 --max-passes 1`: lastModifiedSince, overwriteWhen DIFFERENT)
and (b) a full re-run (every prefix requeued, `sts-job-manager
--exit-when-done`: every object listed and compared) after the same change.
Prints objects found and copied and the wall time of each.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FAST = ["--sleep-timeout", "0.2", "--job-interval", "0.2", "--metrics-interval", "0.2"]


def run(*args: str) -> float:
    started = time.monotonic()
    subprocess.run([str(BIN / args[0]), *args[1:]], check=True, capture_output=True)
    return time.monotonic() - started


def change(source: Path, names: list[str], percent: float, seed: int) -> int:
    rng = random.Random(seed)
    chosen = rng.sample(names, max(1, int(len(names) * percent / 100)))
    for name in chosen:
        path = source / name
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.write_bytes(bytes(data))
    return len(chosen)


def latest_counters(engine_db: Path, since: int) -> tuple[int, int]:
    """Objects found and copied over the operations after the first `since`."""
    with sqlite3.connect(engine_db) as db:
        bodies = [
            json.loads(b) for (b,) in db.execute("SELECT body FROM operations ORDER BY rowid")
        ]
    found = copied = 0
    for op in bodies[since:]:
        c = op.get("counters", {})
        found += int(c.get("objectsFoundFromSource", 0))
        copied += int(c.get("objectsCopiedToSink", 0))
    return found, copied


def operations(engine_db: Path) -> int:
    with sqlite3.connect(engine_db) as db:
        return db.execute("SELECT COUNT(*) FROM operations").fetchone()[0]


def main() -> None:
    prefixes, files, size, percent = (
        int(sys.argv[1]) if len(sys.argv) > 1 else 8,
        int(sys.argv[2]) if len(sys.argv) > 2 else 500,
        int(sys.argv[3]) if len(sys.argv) > 3 else 65536,
        float(sys.argv[4]) if len(sys.argv) > 4 else 1.0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "buckets"
        source, destination = root / "src", root / "dst"
        destination.mkdir(parents=True)
        names = []
        old = time.time() - 86_400
        for p in range(prefixes):
            for f in range(files):
                name = f"data/p{p:05d}/f{f:05d}"
                path = source / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(size))
                os.utime(path, (old, old))
                names.append(name)
        prefix_file = base / "prefixes.json"
        prefix_file.write_text(json.dumps([f"data/p{p:05d}/" for p in range(prefixes)]))
        state = ["--state", f"sqlite:{base / 'state.db'}"]
        backends = [
            *state,
            "--transfer",
            f"local:{root}",
            "--source-bucket",
            "src",
            "--destination-bucket",
            "dst",
        ]
        engine_db = root / ".sts-engine" / "engine.db"
        run("sts-prepare-tables", *state, "--job-prefix-source-file", str(prefix_file))
        once = ["--until-objects", "0", "--max-passes", "1"]
        migrated = run("sts-cutover", *backends, *FAST, *once)
        print(
            f"{prefixes * files} objects of {size} bytes; migration and a first delta: "
            f"{migrated:.1f} s"
        )

        changed = change(source, names, percent, seed=1)
        before = operations(engine_db)
        delta = run("sts-cutover", *backends, *FAST, *once)
        found, copied = latest_counters(engine_db, before)
        ops = operations(engine_db) - before
        print(
            f"delta pass:  {changed} changed; {ops} operations, {found} found, "
            f"{copied} copied, {delta:.1f} s"
        )

        changed = change(source, names, percent, seed=2)
        before = operations(engine_db)
        full = run("sts-requeue", *state, "--job-prefix-source-file", str(prefix_file))
        full += run("sts-job-manager", *backends, *FAST, "--exit-when-done")
        found, copied = latest_counters(engine_db, before)
        ops = operations(engine_db) - before
        print(
            f"full re-run: {changed} changed; {ops} operations, {found} found, "
            f"{copied} copied, {full:.1f} s"
        )


if __name__ == "__main__":
    main()
