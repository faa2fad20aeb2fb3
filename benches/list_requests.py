"""STS list requests per steady-state sync against sts-emulator, while 20
prefixes run, after N prefixes finished earlier with 0 or 2 failed
operations each (the scenario of tests/test_scale.py, at benchmark sizes).

Run: python benches/list_requests.py [N ...]   (default 10000 100000)"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_scale import steady_sync_requests  # noqa: E402


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    for finished in sizes:
        for retries in (0, 2):
            base = Path(tempfile.mkdtemp(prefix="list-requests-"))
            began = time.monotonic()
            requests = steady_sync_requests(base, finished, retries, patience=1800)
            print(
                f"{finished} finished prefixes, {retries} retries each: "
                f"{requests / 2:.0f} STS requests per steady-state sync "
                f"(set up and measured in {time.monotonic() - began:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
