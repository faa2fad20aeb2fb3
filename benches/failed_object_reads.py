"""Reading failed objects back from Cloud Logging, over HTTP to sts-emulator
(STS and Logging v2 stand-ins, the local engine underneath).

    python benches/failed_object_reads.py [OPERATIONS] [ENTRIES]
    (default 200 operations, 100,000 entries)

(a) OPERATIONS prefixes of three objects, two failing each: every operation
ends with failures; prints the `entries.list` requests the whole run made
(against the operations), the manager's cycles, and the rows read back.
(b) One prefix of ENTRIES objects, all failing: prints how long the run took
with the failure entries read back against one with `--no-object-logs`, and
the requests (1,000 entries a page, paced under Logging's 60 a minute).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LOGLEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import sts_job_manager as sjm  # noqa: E402
from conftest import Emulator  # noqa: E402

PROJECT = "bench-logs"


def bucket_with(root: Path, files: dict[str, bytes]) -> None:
    source = root / "migration-source"
    for name, data in files.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "migration-destination").mkdir(parents=True, exist_ok=True)


def run(base: Path, prefixes: list[str], **extra: object) -> tuple[float, dict, int, int]:
    """Seconds, the emulator's method counts, cycles, failed-object rows."""
    root = base / "buckets"
    faults = root / ".sts-engine" / "faults.json"
    faults.parent.mkdir(parents=True, exist_ok=True)
    # DATA_LOSS: not a permanent cause, so no halt however many prefixes fail.
    faults.write_text('{"fail_objects_matching": "*/fail-*", "error_code": "DATA_LOSS"}')
    emulator = Emulator(root)
    os.environ["STORAGE_TRANSFER_EMULATOR_HOST"] = emulator.host
    os.environ["LOGGING_EMULATOR_HOST"] = emulator.host
    options = {
        "state": f"sqlite:{base / 'state.db'}",
        "transfer": "sts",
        "project": PROJECT,
        "sleep_timeout": 0.2,
        "job_interval": 0.2,
        "metrics_interval": 0.2,
        "no_retry_on_job_error": True,
        "max_concurrent_jobs": 200,
        **extra,
    }
    try:
        sjm.prepare_tables(options, prefixes=prefixes)
        manager = sjm.Manager(options)
        began = time.monotonic()
        cycles = 0
        while not manager.run_once()["done"]:
            cycles += 1
            time.sleep(0.2)
        seconds = time.monotonic() - began
        methods = emulator.stats()["methods"]
        rows = len(sjm.State(options).failed_objects())
    finally:
        emulator.stop()
    return seconds, methods, cycles, rows


def main() -> None:
    operations = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    entries = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "many"
        prefixes = [f"data/p{i:05d}/" for i in range(operations)]
        files = {}
        for prefix in prefixes:
            files[f"{prefix}ok.bin"] = b"ok"
            files[f"{prefix}fail-1.bin"] = b"no"
            files[f"{prefix}fail-2.bin"] = b"no"
        bucket_with(base / "buckets", files)
        seconds, methods, cycles, rows = run(base, prefixes)
        print(
            f"(a) {operations} operations ending with failures: "
            f"{methods.get('logging.entries.list', 0)} entries.list requests in {cycles} "
            f"cycles, {rows:,} failed objects read back, {seconds:.1f} s"
        )
    for logs in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "big"
            files = {f"data/big/{i // 1000:04d}/fail-{i:07d}.bin": b"x" for i in range(entries)}
            bucket_with(base / "buckets", files)
            extra = {} if logs else {"no_object_logs": True}
            seconds, methods, cycles, rows = run(base, ["data/big/"], **extra)
            print(
                f"(b) one prefix, {entries:,} objects failing, "
                f"{'failure entries read' if logs else '--no-object-logs'}: {seconds:.1f} s, "
                f"{methods.get('logging.entries.list', 0)} entries.list requests, "
                f"{rows:,} rows"
            )


if __name__ == "__main__":
    main()
