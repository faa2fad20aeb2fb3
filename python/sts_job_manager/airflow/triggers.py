"""Trigger polling the job table until every prefix is done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

import sts_job_manager as sjm

from .hooks import DEFAULT_CONN_ID, StsJobManagerHook


def migration_state(
    counts: Mapping[str, int], fail_on_error: bool, final_errors: int = 0
) -> str | None:
    """ "done" when every prefix is done, "error" when a prefix failed and
    failures should stop the wait, "stuck" when every prefix left is in
    error and out of retries (``final_errors`` of them: nothing will move
    until they are requeued), else None (keep waiting)."""
    if fail_on_error and counts.get("error", 0) > 0:
        return "error"
    if all(n == 0 for status, n in counts.items() if status != "done"):
        return "done"
    if only_errors_left(counts) and final_errors >= counts.get("error", 0):
        return "stuck"
    return None


def only_errors_left(counts: Mapping[str, int]) -> bool:
    """Nothing waiting, running or paused, and some prefixes in error: then
    whether they are out of retries decides if the wait can ever end."""
    in_flight = sum(counts.get(s, 0) for s in ("waiting", "running", "paused"))
    return in_flight == 0 and counts.get("error", 0) > 0


def stuck_message(counts: Mapping[str, int], finals: list[str]) -> str:
    shown = ", ".join(repr(p) for p in finals[:5]) + (" ..." if len(finals) > 5 else "")
    return (
        f"every unfinished prefix is in error and out of retries ({counts.get('error')}: "
        f"{shown}); nothing will change until they are requeued: run sts-requeue, "
        "then the manager"
    )


class StsMigrationDoneTrigger(BaseTrigger):
    """Polls the state store (with the async API, never blocking the
    triggerer's event loop) every ``poll_interval`` seconds; fires one
    event: ``{"status": "success", "counts": ...}`` or ``{"status":
    "error", "message": ..., "counts": ...}``."""

    def __init__(
        self,
        options: Mapping[str, Any],
        poll_interval: float = 60.0,
        fail_on_error: bool = False,
        gcp_conn_id: str = DEFAULT_CONN_ID,
        impersonation_chain: str | list[str] | None = None,
    ) -> None:
        super().__init__()
        self.options = dict(options)
        self.poll_interval = float(poll_interval)
        self.fail_on_error = bool(fail_on_error)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "options": self.options,
                "poll_interval": self.poll_interval,
                "fail_on_error": self.fail_on_error,
                "gcp_conn_id": self.gcp_conn_id,
                "impersonation_chain": self.impersonation_chain,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        counts: dict[str, int] = {}
        try:
            hook = StsJobManagerHook(self.gcp_conn_id, self.impersonation_chain)
            options, credentials = await hook.aoptions_and_credentials(self.options)
            state = sjm.State(options, **credentials)
            finals: list[str] = []
            while True:
                counts = await state.status_counts_async()
                if only_errors_left(counts):
                    finals = await state.final_errors_async()
                outcome = migration_state(counts, self.fail_on_error, len(finals))
                if outcome is not None:
                    break
                self.log.info("prefixes per status: %s", counts)
                await asyncio.sleep(self.poll_interval)
        except Exception as e:  # the sensor turns an error event into a failure
            event = {"status": "error", "message": f"{type(e).__name__}: {e}", "counts": counts}
        else:
            if outcome == "done":
                event = {"status": "success", "counts": counts}
            elif outcome == "stuck":
                message = stuck_message(counts, finals)
                event = {"status": "error", "message": message, "counts": counts}
            else:
                event = {
                    "status": "error",
                    "message": f"{counts.get('error')} prefix(es) in error",
                    "counts": counts,
                }
        yield TriggerEvent(event)


class StsJobManagerRunTrigger(BaseTrigger):
    """Runs the manager's cycles in the triggerer until every prefix is
    finished, with the async API (the event loop is never blocked; the
    manager takes the job table's lease for each cycle). Fires one event:
    ``{"status": "success", "summary": ...}`` with the last cycle's summary,
    or ``{"status": "error", "message": ...}``."""

    def __init__(
        self,
        options: Mapping[str, Any],
        poll_interval: float = 60.0,
        gcp_conn_id: str = DEFAULT_CONN_ID,
        impersonation_chain: str | list[str] | None = None,
    ) -> None:
        super().__init__()
        self.options = dict(options)
        self.poll_interval = float(poll_interval)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "options": self.options,
                "poll_interval": self.poll_interval,
                "gcp_conn_id": self.gcp_conn_id,
                "impersonation_chain": self.impersonation_chain,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            hook = StsJobManagerHook(self.gcp_conn_id, self.impersonation_chain)
            options, credentials = await hook.aoptions_and_credentials(self.options)
            # Opening reads the state store: off the event loop.
            manager = await asyncio.to_thread(lambda: sjm.Manager(options, **credentials))
            while True:
                summary = await manager.run_once_async()
                if summary["done"]:
                    break
                self.log.info("prefixes per status: %s", summary["counts"])
                await asyncio.sleep(self.poll_interval)
        except Exception as e:  # the operator turns an error event into a failure
            event: dict[str, Any] = {"status": "error", "message": f"{type(e).__name__}: {e}"}
        else:
            event = {"status": "success", "summary": summary}
        yield TriggerEvent(event)


__all__ = [
    "StsJobManagerRunTrigger",
    "StsMigrationDoneTrigger",
    "migration_state",
    "only_errors_left",
    "stuck_message",
]
