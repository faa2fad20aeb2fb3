"""sts-report: one self-contained HTML file (it opens with no network) and
its JSON twin, whose totals equal sts-status --json on the same state."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import FAILING_PREFIX, finished_migration_with_failures, tool

# The figures that do not move with the clock once a migration has ended
# (throughput and the ETA are taken over the last hour up to now).
STEADY = [
    "prefixes",
    "objects",
    "bytes",
    "unlisted_prefixes",
    "stalled_total",
    "needs_action",
    "needs_action_total",
    "failing",
    "failing_total",
    "error_codes",
    "verification",
]


def test_the_report_holds_every_prefix_and_the_totals_of_sts_status(tmp_path: Path) -> None:
    migration = finished_migration_with_failures(tmp_path / "m")
    args = migration.state_args()
    # One prefix checked and tampered with afterwards: still "verified" until
    # checked again, and a done prefix never checked.
    ok = next(p for p in migration.prefixes if p != FAILING_PREFIX)
    tool("sts-verify", *migration.backend_args(), "--prefix", ok)
    out = tmp_path / "signoff.html"
    written = tool("sts-report", *args, "--out", str(out))
    assert str(out) in written.stdout
    twin = json.loads(out.with_suffix(".json").read_text())
    status = json.loads(tool("sts-status", *args, "--json").stdout)
    for key in STEADY:
        assert twin["totals"][key] == status[key], key

    lines = {p["prefix"]: p for p in twin["prefixes"]}
    assert sorted(lines) == sorted(migration.prefixes)
    failing = lines[FAILING_PREFIX]
    assert failing["status"] == "error"
    assert failing["attempts"] == 1 and len(failing["operations"]) == 1
    (code,) = failing["failure_codes"]
    assert code["code"] == "PERMISSION_DENIED"
    assert code["count"] == failing["objects"]["failed"] == 3
    assert code["samples"] and all(
        s.startswith("gs://") and FAILING_PREFIX in s for s in code["samples"]
    )
    assert lines[ok]["verification"]["result"] == "verified"
    assert not lines[ok]["verification"]["stale"]
    assert all(lines[p]["verification"] is None for p in migration.prefixes if p != ok)
    # The totals are the prefixes' figures summed.
    for kind in ("objects", "bytes"):
        for figure in ("found", "copied", "skipped", "failed", "failed_attempts"):
            summed = sum(p[kind][figure] for p in twin["prefixes"])
            assert twin["totals"][kind][figure] == summed, (kind, figure)
    assert twin["plots"]["time"], "a plot of status over time"

    html = out.read_text()
    # Nothing fetched from elsewhere: no external script, style, image or font.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    embedded = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1)) == twin
    # Every '<' inside the data is escaped: no name can end or bend the element.
    assert "<" not in embedded.group(1)
    assert "Sign-off report" in html and "Prefixes per status" in html


def test_a_report_of_nothing_says_no_data_yet(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    tool("sts-prepare-tables", "--state", f"sqlite:{state}")
    out = tmp_path / "empty.html"
    tool("sts-report", "--state", f"sqlite:{state}", "--out", str(out))
    assert "no data yet" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["prefixes"] == []


def test_an_out_the_report_cannot_take_is_refused_before_anything_is_read(
    tmp_path: Path,
) -> None:
    # The state does not exist: each refusal names --out, so it came first.
    state = ["--state", f"sqlite:{tmp_path / 'absent.db'}"]
    page_as_json = tmp_path / "signoff.json"
    cases = [
        (page_as_json, "would overwrite the page"),
        (tmp_path, "is a folder"),
        (tmp_path / "missing" / "signoff.html", "does not exist"),
    ]
    for out, says in cases:
        result = tool("sts-report", *state, "--out", str(out), check=False)
        assert result.returncode == 2, result
        assert says in result.stderr and "--out" in result.stderr, result.stderr
    assert not page_as_json.exists()
    assert not (tmp_path / "absent.db").exists()
