"""Re-running the failed objects of a prefix by manifest against re-running the
whole prefix, on the local engine: one prefix of N objects of which 1% fail
(a fault), then `sts-requeue --failed-objects` (a manifest of the failed
objects) and, from the same destination state, a plain requeue of the prefix.
Prints the objects each re-run found (listed) and copied and how long the
manager took to finish it.

Run: python benches/manifest_rerun.py [N]   (default 100000)"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("LOGLEVEL", "WARNING")

import sts_job_manager as sjm  # noqa: E402 (after LOGLEVEL)

PREFIX = "data/big/"


def latest_operation(options: dict) -> dict:
    """The prefix's latest operation, from its history rows."""
    history = sjm.State(options).history()
    rows = history[history["operation_results"].notna()]
    return json.loads(rows["operation_results"].iloc[-1])


def rerun(options: dict) -> tuple[float, dict, float]:
    """Seconds until the manager finished, the operation's counters, and the
    operation's own duration (startTime to endTime)."""
    began = time.monotonic()
    sjm.Manager(options).run_until_done(timeout=3600)
    seconds = time.monotonic() - began
    op = latest_operation(options)
    stamp = [
        datetime.fromisoformat(op[key].replace("Z", "+00:00")) for key in ("startTime", "endTime")
    ]
    return seconds, op["counters"], (stamp[1] - stamp[0]).total_seconds()


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    failing = max(1, total // 100)
    base = Path(tempfile.mkdtemp(prefix="manifest-rerun-"))
    try:
        root = base / "buckets"
        source = root / "migration-source" / PREFIX
        for folder in range(total // 1000 + 1):
            (source / f"{folder:04d}").mkdir(parents=True, exist_ok=True)
        failed_names = []
        for i in range(total):
            # Every 100th object fails while the fault is on.
            name = f"{i // 1000:04d}/{'fail-' if i % 100 == 0 else ''}{i:07d}.bin"
            (source / name).write_bytes(b"%07d" % i)
            if i % 100 == 0:
                failed_names.append(PREFIX + name)
        (root / "migration-destination").mkdir()
        (root / "manifests").mkdir()
        options = {
            "state": f"sqlite:{base / 'state.db'}",
            "transfer": f"local:{root}",
            "sleep_timeout": 0.2,
            "job_interval": 0.2,
            "metrics_interval": 0.2,
            "no_retry_on_job_error": True,
        }
        sjm.prepare_tables(options, prefixes=[PREFIX])
        faults = root / ".sts-engine" / "faults.json"
        faults.parent.mkdir(parents=True, exist_ok=True)
        faults.write_text(json.dumps({"fail_objects_matching": "*/fail-*"}))
        began = time.monotonic()
        sjm.Manager(options).run_until_done(timeout=3600)
        print(
            f"{total} objects, {failing} failing: first run {time.monotonic() - began:.1f} s",
            flush=True,
        )
        faults.write_text("{}")

        result = sjm.requeue(options, failed_objects=True, manifest_location="gs://manifests/m/")
        seconds, counters, operation = rerun(options)
        print(
            f"manifest re-run: {result['manifests'][0]['objects']} objects in the manifest, "
            f"{counters.get('objectsFoundFromSource', '0')} found (listed), "
            f"{counters.get('objectsCopiedToSink', '0')} copied; operation {operation:.2f} s, "
            f"manager until done {seconds:.2f} s",
            flush=True,
        )

        # The same destination state again: the failed objects missing.
        for name in failed_names:
            (root / "migration-destination" / name).unlink()
        sjm.requeue(options, prefixes=[PREFIX])
        seconds, counters, operation = rerun(options)
        print(
            f"whole-prefix re-run: {counters.get('objectsFoundFromSource', '0')} found "
            f"(listed), {counters.get('objectsCopiedToSink', '0')} copied, "
            f"{counters.get('objectsFromSourceSkippedBySync', '0')} skipped; operation "
            f"{operation:.2f} s, manager until done {seconds:.2f} s",
            flush=True,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
