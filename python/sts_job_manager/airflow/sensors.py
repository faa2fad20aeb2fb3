"""Sensor waiting until every prefix of the job table is done."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import sts_job_manager as sjm

from ._compat import AirflowException, BaseSensorOperator, checked_options, default_deferrable
from .hooks import DEFAULT_CONN_ID, StsJobManagerHook, chain_list
from .triggers import StsMigrationDoneTrigger, migration_state, only_errors_left, stuck_message


class StsMigrationDoneSensor(BaseSensorOperator):
    """Waits until every prefix is ``done``. With ``fail_on_error=True`` a
    prefix in ``error`` fails the task at once (use it with
    ``no_retry_on_job_error``, when errors are never retried). Without it,
    the task fails when every prefix left is in ``error`` and out of
    retries (``max_retries`` of the options): nothing would move until
    ``sts-requeue``, so the sensor says so instead of waiting to time out.

    ``deferrable=True`` (default: ``[operators] default_deferrable``) pokes
    once, then hands the wait to :class:`StsMigrationDoneTrigger`, freeing
    the worker slot. The XCom is the final count of prefixes per status.
    """

    template_fields: Sequence[str] = ("options", "gcp_conn_id", "impersonation_chain")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        options: Mapping[str, Any],
        fail_on_error: bool = False,
        deferrable: bool | None = None,
        gcp_conn_id: str = DEFAULT_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.options = checked_options(options)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.fail_on_error = fail_on_error
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self._counts: dict[str, int] = {}

    def poke(self, context: Any) -> bool:
        hook = StsJobManagerHook(self.gcp_conn_id, self.impersonation_chain)
        state = sjm.State(hook.options(self.options), **hook.credentials_kwargs())
        self._counts = state.status_counts()
        finals = state.final_errors() if only_errors_left(self._counts) else []
        outcome = migration_state(self._counts, self.fail_on_error, len(finals))
        if outcome == "error":
            raise AirflowException(f"prefixes in error: {self._counts}")
        if outcome == "stuck":
            raise AirflowException(stuck_message(self._counts, finals))
        self.log.info("prefixes per status: %s", self._counts)
        return outcome == "done"

    def execute(self, context: Any) -> dict[str, int]:
        if not self.deferrable:
            super().execute(context)
        elif not self.poke(context):
            self.defer(
                trigger=StsMigrationDoneTrigger(
                    options=self.options,
                    poll_interval=self.poke_interval_seconds(),
                    fail_on_error=self.fail_on_error,
                    gcp_conn_id=self.gcp_conn_id,
                    impersonation_chain=chain_list(self.impersonation_chain),
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout),
            )
        return self._counts

    def poke_interval_seconds(self) -> float:
        interval = self.poke_interval
        return interval.total_seconds() if isinstance(interval, timedelta) else float(interval)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, int]:
        if event.get("status") != "success":
            raise AirflowException(event.get("message", f"unexpected event {event!r}"))
        counts: dict[str, int] = event["counts"]
        return counts


__all__ = ["StsMigrationDoneSensor"]
