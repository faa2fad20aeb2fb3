"""Makespan of a migration on the local engine with throttled copies: 40
prefixes of uneven sizes, 8 slots, intervals 12 s / 3 s / 0.6 s (the
defaults scaled by 1/100). Prints makespan / (total work / slots + ramp
time), where the ramp time is the two job intervals the level takes to
reach 8 (1, 3, then 8).

Run: python benches/makespan.py [--largest-first] [PREFIXES]   (default 40;
CI runs 12)
(with --largest-first the prefixes come from `sts-plan --load`, whose plan
table gives the start round their sizes: largest first)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sts_job_manager as sjm

PREFIXES = 40
SLOTS = 8
BYTES_PER_SECOND = 100_000
JOB_INTERVAL, METRICS_INTERVAL, SLEEP = 12.0, 3.0, 0.6


def main() -> None:
    count = next((int(a) for a in sys.argv[1:] if a.isdigit()), PREFIXES)
    base = Path(tempfile.mkdtemp(prefix="makespan-"))
    root = base / "buckets"
    (root / "migration-destination").mkdir(parents=True)
    sizes = {}
    for i in range(count):
        prefix = f"p{i:02d}/"
        size = ((i * 37) % 36 + 5) * BYTES_PER_SECOND  # 5 s to 40 s of copying
        path = root / "migration-source" / prefix / "object.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * size)
        sizes[prefix] = size
    (root / ".sts-engine").mkdir()
    (root / ".sts-engine" / "faults.json").write_text(
        json.dumps({"bytes_per_second": BYTES_PER_SECOND})
    )
    prefixes = base / "prefixes.json"
    prefixes.write_text(json.dumps(list(sizes)))
    options = sjm.Options(
        state=f"sqlite:{base / 'state.db'}",
        transfer=f"local:{root}",
        max_concurrent_jobs=SLOTS,
        job_interval=JOB_INTERVAL,
        metrics_interval=METRICS_INTERVAL,
        sleep_timeout=SLEEP,
    )
    largest_first = "--largest-first" in sys.argv
    if largest_first:
        bin_dir = Path(sys.executable).parent
        subprocess.run(
            [
                str(bin_dir / "sts-plan"),
                "--state",
                f"sqlite:{base / 'state.db'}",
                "--transfer",
                f"local:{root}",
                "--shards",
                str(count),
                "--load",
            ],
            check=True,
            capture_output=True,
        )
        planned = len(sjm.State(options).jobs())
        assert planned == count, f"sts-plan proposed {planned} prefixes"
    else:
        sjm.prepare_tables(options, job_prefix_source_file=str(prefixes))
    began = time.monotonic()
    summary = sjm.Manager(options).run_until_done(timeout=3600)
    makespan = time.monotonic() - began
    assert summary["counts"]["done"] == count, summary["counts"]
    work = sum(sizes.values()) / BYTES_PER_SECOND
    ramp = 2 * JOB_INTERVAL
    ideal = work / SLOTS + ramp
    print(
        f"makespan {makespan:.1f} s; total work {work:.0f} s over {SLOTS} slots = "
        f"{work / SLOTS:.1f} s, + ramp {ramp:.0f} s = {ideal:.1f} s; "
        f"ratio {makespan / ideal:.2f} ({'largest first' if largest_first else 'table order'})"
    )


if __name__ == "__main__":
    main()
