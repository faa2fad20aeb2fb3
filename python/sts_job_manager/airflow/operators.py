"""Operators: one manager cycle, and one per helper tool. Each ``execute()``
returns a JSON-able dict, pushed as the task's XCom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import sts_job_manager as sjm

from ._compat import AirflowException, BaseOperator, checked_options, default_deferrable
from .hooks import DEFAULT_CONN_ID, StsJobManagerHook, chain_list
from .triggers import StsJobManagerRunTrigger


class _StsOperator(BaseOperator):
    """``gcp_conn_id`` (a Google Cloud connection) and
    ``impersonation_chain`` give the credentials of every Google call, as in
    Airflow's Google provider; without the connection, Application Default
    Credentials. The connection's ``project`` extra fills a missing
    ``project`` option."""

    template_fields: Sequence[str] = ("options", "gcp_conn_id", "impersonation_chain")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        options: Mapping[str, Any],
        gcp_conn_id: str = DEFAULT_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Option names as the CLI flags (``max_concurrent_jobs=5``), e.g.
        # ``{"state": "sqlite:/data/state.db", "transfer": "sts", ...}``.
        self.options = checked_options(options)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    def hook(self) -> StsJobManagerHook:
        return StsJobManagerHook(
            gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain
        )

    def core_arguments(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(options, credential keyword arguments) for the core."""
        hook = self.hook()
        return hook.options(self.options), hook.credentials_kwargs()


class StsJobManagerRunOperator(_StsOperator):
    """Runs one manager cycle (sync, start jobs, sync) and returns its summary:
    ``counts`` per status, ``started``, ``resumed``, ``stalled``, ``errors``,
    ``progress``, ``done``.

    With ``until_done=True`` it keeps cycling (sleeping ``sleep_timeout``
    between iterations) until no prefix is pending or running, failing after
    ``timeout`` seconds if given. A migration that finishes with prefixes in
    ``error`` (out of retries) fails the task, naming them and their error
    codes, unless ``allow_failed_prefixes=True``. ``deferrable=True``
    (default: ``[operators] default_deferrable``) runs the first cycle on the
    worker, then hands the cycles to :class:`StsJobManagerRunTrigger` in the
    triggerer, freeing the worker slot for the rest of the migration.
    """

    def __init__(
        self,
        *,
        options: Mapping[str, Any],
        until_done: bool = False,
        timeout: float | None = None,
        allow_failed_prefixes: bool = False,
        deferrable: bool | None = None,
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
        self.deferrable = default_deferrable() if deferrable is None else deferrable

    def execute(self, context: Any) -> dict[str, Any]:
        options, credentials = self.core_arguments()
        manager = sjm.Manager(options, **credentials)
        if self.until_done and self.deferrable:
            summary = manager.run_once()
            if not summary["done"]:
                self.log.info("prefixes per status: %s", summary["counts"])
                del manager  # gives the lease up; the triggerer takes it each cycle
                self.defer(
                    trigger=StsJobManagerRunTrigger(
                        options=self.options,
                        gcp_conn_id=self.gcp_conn_id,
                        impersonation_chain=chain_list(self.impersonation_chain),
                        poll_interval=float(sjm.Options(**options).sleep_timeout),
                    ),
                    method_name="execute_complete",
                    timeout=None
                    if self.cycle_timeout is None
                    else timedelta(seconds=self.cycle_timeout),
                )
        elif self.until_done:
            summary = manager.run_until_done(timeout=self.cycle_timeout)
        else:
            summary = manager.run_once()
        return self._finished(summary)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "success":
            raise AirflowException(event.get("message", f"unexpected event {event!r}"))
        return self._finished(event["summary"])

    def _finished(self, summary: dict[str, Any]) -> dict[str, Any]:
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

    template_fields: Sequence[str] = (
        "options",
        "gcp_conn_id",
        "impersonation_chain",
        "job_prefix_source_file",
    )

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
        options, credentials = self.core_arguments()
        report = sjm.prepare_tables(options, **extra, **credentials)
        self.log.info("prepare tables: %s", report)
        return report


class StsPauseAllJobsOperator(_StsOperator):
    """Pauses every running transfer operation of the project (emergency stop)."""

    def execute(self, context: Any) -> dict[str, Any]:
        options, credentials = self.core_arguments()
        report = sjm.pause_all_jobs(options, **credentials)
        self.log.info("paused: %s", report)
        return report


class StsRemoveSuccessfulOneTimeJobsOperator(_StsOperator):
    """Deletes every one-time transfer job whose operations all succeeded."""

    def execute(self, context: Any) -> dict[str, Any]:
        options, credentials = self.core_arguments()
        report = sjm.remove_successful_one_time_jobs(options, **credentials)
        self.log.info("removed: %s", report)
        return report


__all__ = [
    "StsJobManagerRunOperator",
    "StsPauseAllJobsOperator",
    "StsPrepareTablesOperator",
    "StsRemoveSuccessfulOneTimeJobsOperator",
]
