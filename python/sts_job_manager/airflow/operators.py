"""Operators: one manager cycle, and one per helper tool. Each ``execute()``
returns a JSON-able dict, pushed as the task's XCom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sts_job_manager as sjm

from ._compat import AirflowException, BaseOperator, checked_options


class _StsOperator(BaseOperator):
    template_fields: Sequence[str] = ("options",)
    ui_color = "#e8f0fe"

    def __init__(self, *, options: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Option names as the CLI flags (``max_concurrent_jobs=5``), e.g.
        # ``{"state": "sqlite:/data/state.db", "transfer": "sts", ...}``.
        self.options = checked_options(options)


class StsJobManagerRunOperator(_StsOperator):
    """Runs one manager cycle (sync, start jobs, sync) and returns its summary:
    ``counts`` per status, ``started``, ``resumed``, ``stalled``, ``errors``,
    ``progress``, ``done``.

    With ``until_done=True`` it keeps cycling (sleeping ``sleep_timeout``
    between iterations) until no prefix is pending or running, failing after
    ``timeout`` seconds if given. A migration that finishes with prefixes in
    ``error`` (out of retries) fails the task, naming them and their error
    codes, unless ``allow_failed_prefixes=True``.
    """

    def __init__(
        self,
        *,
        options: Mapping[str, Any],
        until_done: bool = False,
        timeout: float | None = None,
        allow_failed_prefixes: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(options=options, **kwargs)
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 seconds, not {timeout!r}")
        if timeout is not None and not until_done:
            raise ValueError("timeout applies only with until_done=True")
        self.until_done = until_done
        self.cycle_timeout = timeout
        self.allow_failed_prefixes = allow_failed_prefixes

    def execute(self, context: Any) -> dict[str, Any]:
        manager = sjm.Manager(self.options)
        if self.until_done:
            summary = manager.run_until_done(timeout=self.cycle_timeout)
        else:
            summary = manager.run_once()
        self.log.info("prefixes per status: %s", summary["counts"])
        for failure in summary.get("failed", []):
            codes = ", ".join(f"{c['code']} x{c['count']}" for c in failure["codes"])
            self.log.error("prefix %r failed: %s", failure["prefix"], codes or "no error codes")
        if self.until_done and summary.get("failed_count", 0) and not self.allow_failed_prefixes:
            names = ", ".join(repr(f["prefix"]) for f in summary.get("failed", [])[:10])
            raise AirflowException(
                f"the migration finished with {summary['failed_count']} prefixes in error "
                f"({names}); requeue them with sts-requeue after fixing the cause, or pass "
                "allow_failed_prefixes=True"
            )
        return summary


class StsPrepareTablesOperator(_StsOperator):
    """Creates the dataset and tables if missing and loads the prefixes of
    ``job_prefix_source_file`` (a JSON array of strings) as ``waiting``."""

    template_fields: Sequence[str] = ("options", "job_prefix_source_file")

    def __init__(
        self,
        *,
        options: Mapping[str, Any],
        job_prefix_source_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(options=options, **kwargs)
        self.job_prefix_source_file = job_prefix_source_file

    def execute(self, context: Any) -> dict[str, Any]:
        extra = {}
        if self.job_prefix_source_file:
            extra["job_prefix_source_file"] = self.job_prefix_source_file
        report = sjm.prepare_tables(self.options, **extra)
        self.log.info("prepare tables: %s", report)
        return report


class StsPauseAllJobsOperator(_StsOperator):
    """Pauses every running transfer operation of the project (emergency stop)."""

    def execute(self, context: Any) -> dict[str, Any]:
        report = sjm.pause_all_jobs(self.options)
        self.log.info("paused: %s", report)
        return report


class StsRemoveSuccessfulOneTimeJobsOperator(_StsOperator):
    """Deletes every one-time transfer job whose operations all succeeded."""

    def execute(self, context: Any) -> dict[str, Any]:
        report = sjm.remove_successful_one_time_jobs(self.options)
        self.log.info("removed: %s", report)
        return report


__all__ = [
    "StsJobManagerRunOperator",
    "StsPauseAllJobsOperator",
    "StsPrepareTablesOperator",
    "StsRemoveSuccessfulOneTimeJobsOperator",
]
