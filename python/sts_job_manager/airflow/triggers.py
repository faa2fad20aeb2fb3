"""Trigger polling the job table until every prefix is done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

import sts_job_manager as sjm


def migration_state(counts: Mapping[str, int], fail_on_error: bool) -> str | None:
    """ "done" when every prefix is done, "error" when a prefix failed and
    failures should stop the wait, else None (keep waiting)."""
    if fail_on_error and counts.get("error", 0) > 0:
        return "error"
    if all(n == 0 for status, n in counts.items() if status != "done"):
        return "done"
    return None


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
    ) -> None:
        super().__init__()
        self.options = dict(options)
        self.poll_interval = float(poll_interval)
        self.fail_on_error = bool(fail_on_error)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "options": self.options,
                "poll_interval": self.poll_interval,
                "fail_on_error": self.fail_on_error,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        counts: dict[str, int] = {}
        try:
            state = sjm.State(self.options)
            while True:
                counts = await state.status_counts_async()
                outcome = migration_state(counts, self.fail_on_error)
                if outcome is not None:
                    break
                self.log.info("prefixes per status: %s", counts)
                await asyncio.sleep(self.poll_interval)
        except Exception as e:  # the sensor turns an error event into a failure
            event = {"status": "error", "message": f"{type(e).__name__}: {e}", "counts": counts}
        else:
            if outcome == "done":
                event = {"status": "success", "counts": counts}
            else:
                event = {
                    "status": "error",
                    "message": f"{counts.get('error')} prefix(es) in error",
                    "counts": counts,
                }
        yield TriggerEvent(event)


__all__ = ["StsMigrationDoneTrigger", "migration_state"]
