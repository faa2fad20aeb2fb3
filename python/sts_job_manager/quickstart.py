"""``sts-quickstart [DIR]``: the whole product on a laptop, no cloud account.

Makes a sample source bucket (a few hundred files under ten prefixes), prepares
the SQLite state, and runs the manager with short intervals on the local
transfer engine until every prefix is done, showing live progress.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

from . import Manager, Options, State, __version__, prepare_tables
from .errors import StsJobManagerError

MARKER = ".sts-quickstart"
PREFIXES = [f"logs/{year}/" for year in range(2016, 2024)] + ["images/", "exports/"]


def make_source_bucket(source: Path, seed: int = 7) -> tuple[int, int]:
    """Writes a few hundred files of varied sizes; returns (files, bytes)."""
    rng = random.Random(seed)
    files = total = 0
    for prefix in PREFIXES:
        for index in range(rng.randint(20, 40)):
            path = source / prefix / f"part-{index:04d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            size = rng.randint(1_000, 40_000)
            path.write_bytes(rng.randbytes(size))
            files += 1
            total += size
    return files, total


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _eta(eta: dict) -> str:
    """The ETA as sts-status words it: never exact while prefixes are unlisted."""
    if eta["seconds"] is None:
        return "ETA unknown"
    if eta["estimate"]:
        return f"ETA ~{_duration(eta['seconds'])} (estimate)"
    return f"ETA {_duration(eta['seconds'])}"


def _progress_line(summary: dict, status: dict, elapsed: float) -> str:
    counts = summary["counts"]
    progress = summary["progress"]
    statuses = " ".join(f"{status} {counts[status]:>2}" for status in counts)
    copied = progress["objects_copied"] + progress["objects_skipped"]
    rate = status["throughput"]["bytes_per_second"]
    return (
        f"[{elapsed:5.1f}s] {statuses} | objects {copied}/{progress['objects_found']}"
        f" | {_human(progress['bytes_copied'])} copied | {_human(rate)}/s | {_eta(status['eta'])}"
    )


def prepare_directory(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise SystemExit(
                f"sts-quickstart: error: {directory} exists and is not a quickstart directory;"
                " name an empty or new directory"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by sts-quickstart; safe to delete\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sts-quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="sts-quickstart", help="where to work")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--max-concurrent-jobs", type=int, default=4)
    parser.add_argument(
        "--bytes-per-second",
        type=int,
        default=400_000,
        help="copy rate per operation, so the ramp-up can be watched (0: full speed)",
    )
    args = parser.parse_args(argv)
    directory = Path(args.directory).resolve()
    prepare_directory(directory)

    buckets = directory / "buckets"
    files, size = make_source_bucket(buckets / "migration-source")
    (buckets / "migration-destination").mkdir(parents=True)
    engine = buckets / ".sts-engine"
    engine.mkdir()
    (engine / "faults.json").write_text(json.dumps({"bytes_per_second": args.bytes_per_second}))
    prefix_file = directory / "prefixes.json"
    prefix_file.write_text(json.dumps(PREFIXES, indent=2))
    print(f"Source bucket: {files} files, {_human(size)} under {len(PREFIXES)} prefixes")

    state = directory / "state.db"
    try:
        options = Options(
            state=f"sqlite:{state}",
            transfer=f"local:{buckets}",
            sleep_timeout=1,
            job_interval=1,
            metrics_interval=1,
            max_concurrent_jobs=args.max_concurrent_jobs,
        )
        loaded = prepare_tables(options, job_prefix_source_file=str(prefix_file))
        print(f"Prepared {state.name}: {loaded['loaded']} prefixes waiting\n")
        manager = Manager(options)
        state_view = State(options)
        started = time.monotonic()
        interactive = sys.stdout.isatty()
        while True:
            summary = manager.iteration()
            status = state_view.status(limit=0)
            line = _progress_line(summary, status, time.monotonic() - started)
            # Back to the line's start and clear it, so a shorter line leaves
            # nothing of the longer one before it.
            print(
                ("\r\x1b[K" + line) if interactive else line,
                end="" if interactive else "\n",
                flush=True,
            )
            if summary["done"]:
                break
            time.sleep(1)
    except StsJobManagerError as error:
        raise SystemExit(f"sts-quickstart: error: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit("\nsts-quickstart: interrupted; run it again to start over") from None

    elapsed = time.monotonic() - started
    progress = summary["progress"]
    print(
        f"\n\nDone in {elapsed:.1f} s: {summary['counts']['done']} prefixes done, "
        f"{summary['counts']['error']} in error, {progress['objects_copied']} objects "
        f"({_human(progress['bytes_copied'])}) copied to {buckets / 'migration-destination'}"
    )
    print("\nQuery the state (the same tables as in BigQuery):")
    print(f'  sqlite3 {state} "SELECT status, COUNT(*) FROM sts_job GROUP BY status"')
    print(
        f'  sqlite3 {state} "SELECT prefix, status, timestamp FROM sts_job_history'
        ' ORDER BY timestamp DESC LIMIT 10"'
    )
    print("\nSee the migration's state (counts, rate, ETA, failing prefixes):")
    print(f"  sts-status --state sqlite:{state}")
    print("\nWrite the sign-off report (one HTML file that opens offline, and its JSON twin):")
    print(f"  sts-report --state sqlite:{state} --out {directory / 'sts-report.html'}")
    print("\nRun the manager yourself on the same backends:")
    print(
        f"  sts-job-manager --state sqlite:{state} --transfer local:{buckets}"
        " --sleep-timeout 1 --job-interval 1 --metrics-interval 1 --exit-when-done"
    )


if __name__ == "__main__":
    main()
