"""Both notebooks run headless against a state made by a real run with
injected failures; each writes a JSON summary whose values are checked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import FAILING_PREFIX, Migration, tool
from synthetic_state import Synthetic, make_state

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, work: Path, **parameters: object) -> dict:
    """Executes a notebook as papermill does: the given values go in a cell
    right after the one tagged `parameters`. Any cell error fails."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one parameters cell"
    summary = work / f"{name}.summary.json"
    values = {**parameters, "SUMMARY_PATH": str(summary)}
    injected = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(injected))
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    ).execute()
    nbformat.write(notebook, work / name)
    return json.loads(summary.read_text())


@pytest.fixture(autouse=True)
def _jupyter_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Current Jupyter paths (no deprecation warning) and a headless backend.
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))


def test_failure_analysis_notebook(failed_migration: Migration, tmp_path: Path) -> None:
    # The done prefixes verify; the failed one, checked by name, does not.
    tool("sts-verify", *failed_migration.backend_args())
    mismatch = tool(
        "sts-verify", *failed_migration.backend_args(), "--prefix", FAILING_PREFIX, check=False
    )
    assert mismatch.returncode == 4, mismatch.stdout + mismatch.stderr
    summary = run_notebook(
        "failure_analysis.ipynb", tmp_path, STATE={"state": f"sqlite:{failed_migration.state}"}
    )
    failing = sorted(
        f"gs://{failed_migration.source_bucket}/{name}"
        for name in failed_migration.objects
        if name.startswith(FAILING_PREFIX)
    )
    assert summary == {
        # Failed once: failing now and failed attempts are the same 3.
        "objects_failing_now": len(failing),
        "failed_attempts": len(failing),
        "needs_action": [],
        "failed_prefixes": [FAILING_PREFIX],
        "failing_objects": failing,
        "error_codes": {"PERMISSION_DENIED": len(failing)},
        "retry": [],
        "fix_first": [FAILING_PREFIX],
        "verification": {
            "verified": sorted(p for p in failed_migration.prefixes if p != FAILING_PREFIX),
            "mismatch": [FAILING_PREFIX],
        },
    }


def test_migration_progress_notebook(failed_migration: Migration, tmp_path: Path) -> None:
    summary = run_notebook(
        "migration_progress.ipynb",
        tmp_path,
        STATE={"state": f"sqlite:{failed_migration.state}"},
        RETRY_ERRORS=False,  # as the migration was run
    )
    sizes = {name: len(data) for name, data in failed_migration.objects.items()}
    copied = sum(s for n, s in sizes.items() if not n.startswith(FAILING_PREFIX))
    assert summary["bytes_found"] == sum(sizes.values())
    assert summary["bytes_copied"] == copied
    assert summary["bytes_copied_over_time_last"] == copied
    assert summary["status_counts"] == {
        "done": 3,
        "error": 1,
        "paused": 0,
        "running": 0,
        "waiting": 0,
    }
    final = {status: n for status, n in summary["final_status_counts"].items() if n}
    assert final == {"done": 3, "error": 1}
    assert summary["eta_seconds"] == 0
    assert summary["stalled"] == []
    assert os.path.exists(tmp_path / "migration_progress.ipynb")


# At scale: a generated state of 25,000 prefixes and 100,000 history rows
# (the 1,000,000-row figures come from benches/notebooks_at_scale.py).
@pytest.fixture(scope="module")
def large_state(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    made = make_state(tmp_path_factory.mktemp("large") / "state.db", 25_000, snapshots=3)
    assert made.history_rows == 100_000
    return made


def test_migration_progress_notebook_at_scale(large_state: Synthetic, tmp_path: Path) -> None:
    summary = run_notebook(
        "migration_progress.ipynb", tmp_path, STATE={"state": f"sqlite:{large_state.path}"}
    )
    assert summary["status_counts"] == large_state.counts
    assert summary["final_status_counts"] == large_state.counts
    assert summary["bytes_found"] == large_state.bytes_found
    assert summary["bytes_copied"] == large_state.bytes_copied
    assert summary["bytes_copied_over_time_last"] == large_state.bytes_copied
    assert summary["eta_seconds"] > 0 and summary["eta_is_estimate"] is False


def test_failure_analysis_notebook_at_scale(large_state: Synthetic, tmp_path: Path) -> None:
    summary = run_notebook(
        "failure_analysis.ipynb", tmp_path, STATE={"state": f"sqlite:{large_state.path}"}
    )
    assert len(summary["failed_prefixes"]) == large_state.counts["error"] == 2_500
    assert summary["error_codes"] == large_state.error_codes
    assert len(summary["failing_objects"]) == sum(large_state.error_codes.values())
    assert summary["fix_first"] == summary["failed_prefixes"]
    assert summary["retry"] == []
