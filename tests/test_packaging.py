"""What the wheel promises: it carries its own SQLite and needs no system
library, the project never opens a SQLite file with a second copy in one
process, and `sts-quickstart` runs from the installed wheel."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import sts_job_manager
from conftest import BIN

REPO = Path(__file__).resolve().parent.parent


def test_the_native_module_needs_no_system_sqlite() -> None:
    native = Path(sts_job_manager._core.__file__)
    # The dynamic section's NEEDED entries, read by the dynamic loader itself.
    needed = subprocess.run(["ldd", str(native)], capture_output=True, text=True, check=True)
    assert "libsqlite3" not in needed.stdout, needed.stdout
    assert b"SQLite format 3" in native.read_bytes(), "SQLite is compiled into the module"


def test_no_second_sqlite_copy_opens_a_file_in_process() -> None:
    """Python's sqlite3 module is another SQLite copy than the module's: the
    package never uses it, and tests reach SQLite files only through
    conftest's child process (`sql`)."""
    offenders = []
    for folder in ["python", "tests", "notebooks"]:
        for path in (REPO / folder).rglob("*"):
            # synthetic_state.py fills a state from its own child process,
            # which never imports the package.
            if path.suffix not in {".py", ".ipynb"} or path.name in {
                "conftest.py",
                "synthetic_state.py",
                Path(__file__).name,
            }:
                continue
            text = path.read_text(encoding="utf-8")
            if re.search(r"\bimport sqlite3\b|\bsqlite3\.connect\(", text):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == [], f"use conftest.sql (a child process) instead: {offenders}"
    conftest = (REPO / "tests" / "conftest.py").read_text(encoding="utf-8")
    outside_child = re.sub(r'_SQL_CHILD = r"""(.*?)"""', "", conftest, flags=re.S)
    assert "sqlite3.connect(" in conftest and "sqlite3.connect(" not in outside_child
    # The package imports without pulling Python's sqlite3 in.
    check = "import sys, sts_job_manager, sts_job_manager.state; print('sqlite3' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert imported.stdout.strip() == "False", imported.stderr


def test_quickstart_runs_from_the_installed_tools(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "sts-quickstart"), str(tmp_path / "demo"), "--bytes-per-second", "0"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Done in [\d.]+ s: 10 prefixes done, 0 in error", result.stdout), (
        result.stdout
    )
    # The commands it suggests for looking at the result work as printed.
    suggested = re.findall(r"^  (sts-(?:status|report) .*)$", result.stdout, re.M)
    assert len(suggested) == 2, result.stdout
    for line in suggested:
        name, *args = line.split()
        ran = subprocess.run([str(BIN / name), *args], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (tmp_path / "demo" / "sts-report.html").is_file()
    assert (tmp_path / "demo" / "sts-report.json").is_file()
