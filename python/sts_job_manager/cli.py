"""Console scripts: each hands its arguments to the Rust core."""

from __future__ import annotations

import sys

from . import _core


def _run(program: str) -> None:
    try:
        code = _core.cli_main(program, sys.argv[1:])
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def job_manager() -> None:
    _run("sts-job-manager")


def prepare_tables() -> None:
    _run("sts-prepare-tables")


def pause_all_jobs() -> None:
    _run("sts-pause-all-jobs")


def remove_successful_one_time_jobs() -> None:
    _run("sts-remove-successful-one-time-jobs")


def requeue() -> None:
    _run("sts-requeue")


def emulator() -> None:
    _run("sts-emulator")


def plan() -> None:
    _run("sts-plan")


def verify() -> None:
    _run("sts-verify")


def status() -> None:
    _run("sts-status")


def doctor() -> None:
    _run("sts-doctor")


def report() -> None:
    _run("sts-report")


def cutover() -> None:
    _run("sts-cutover")
