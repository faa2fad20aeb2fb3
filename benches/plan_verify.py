"""sts-plan and sts-verify over a large bucket on the local engine (wall
time and peak RSS of each tool), and list requests per 1,000 objects when
sts-plan lists the same bucket through sts-emulator's Cloud Storage API.

Run (after `maturin develop --release` or installing a release wheel):

    python benches/plan_verify.py [OBJECTS] [--dir DIR]

OBJECTS defaults to 1,000,000 (1,000 folders of 1,000 objects of 100 to
999 bytes); the destination holds hard links to the source files, so the
bucket costs one copy of the data. With --dir the buckets are kept there and
reused by the next run.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import BIN, Emulator  # noqa: E402

PER_FOLDER = 1000


def make_buckets(root: Path, count: int) -> None:
    marker = root / f".made-{count}"
    if marker.exists():
        return
    source, destination = root / "migration-source", root / "migration-destination"
    started = time.monotonic()
    for i in range(count):
        folder = f"logs/{i // PER_FOLDER:05d}"
        if i % PER_FOLDER == 0:
            (source / folder).mkdir(parents=True, exist_ok=True)
            (destination / folder).mkdir(parents=True, exist_ok=True)
        name = f"{folder}/object-{i:08d}.bin"
        size = 100 + i % 900
        (source / name).write_bytes((str(i).encode() * size)[:size])
        os.link(source / name, destination / name)
    marker.touch()
    print(f"made {count} objects in {time.monotonic() - started:.0f} s", flush=True)


def timed(*args: str, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> tuple:
    """Runs a tool under /usr/bin/time -v: (wall seconds, peak RSS MiB, stdout)."""
    started = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if result.returncode not in ok:
        raise SystemExit(f"{args[0]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return wall, int(rss.group(1)) / 1024 if rss else float("nan"), result.stdout


def emulator_requests(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=10) as response:
        return int(__import__("json").load(response)["requests"])


def main() -> None:
    args = sys.argv[1:]
    keep = None
    if "--dir" in args:
        at = args.index("--dir")
        keep = Path(args[at + 1])
        del args[at : at + 2]
    count = int(args[0]) if args else 1_000_000
    work = keep or Path(tempfile.mkdtemp(prefix="sts-plan-bench-"))
    root = work / "buckets"
    root.mkdir(parents=True, exist_ok=True)
    make_buckets(root, count)
    state = work / "state.db"
    state.unlink(missing_ok=True)
    backends = ["--state", f"sqlite:{state}", "--transfer", f"local:{root}"]

    wall, rss, out = timed(str(BIN / "sts-plan"), *backends, "--shards", "100", "--load")
    summary = [line for line in out.splitlines() if "prefixes over" in line]
    print(f"sts-plan --load, {count} objects: {wall:.1f} s, peak RSS {rss:.0f} MiB")
    print(f"  {summary[0] if summary else out[-300:]}")

    with sqlite3.connect(state) as db:
        db.execute("UPDATE sts_job SET status = 'done'")
    wall, rss, out = timed(str(BIN / "sts-verify"), *backends)
    print(f"sts-verify, {count} objects: {wall:.1f} s, peak RSS {rss:.0f} MiB")
    print(f"  {out.strip().splitlines()[-1]}")

    emulator = Emulator(root)
    try:
        env = {**os.environ, "STORAGE_EMULATOR_HOST": emulator.host}
        before = emulator_requests(emulator.url)
        wall, rss, out = timed(
            str(BIN / "sts-plan"),
            "--state",
            f"sqlite:{work / 'unused.db'}",
            "--transfer",
            "sts",
            "--project",
            "bench-project",
            "--shards",
            "100",
            env=env,
        )
        requests = emulator_requests(emulator.url) - before
    finally:
        emulator.stop()
    print(
        f"sts-plan through the emulator's Cloud Storage API: {wall:.1f} s, peak RSS {rss:.0f} MiB,"
        f" {requests} requests = {requests / (count / 1000):.2f} per 1,000 objects"
    )


if __name__ == "__main__":
    main()
