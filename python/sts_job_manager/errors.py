"""Exceptions raised by sts_job_manager; every one derives from StsJobManagerError.

Each carries its data as attributes as well as in its message (``except
LeaseHeldError as e: e.holder, e.until``); an attribute that does not apply
to one occurrence is None.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class StsJobManagerError(Exception):
    """Base of every error raised by sts_job_manager."""


class OptionsError(StsJobManagerError, ValueError):
    """An option is unknown, mistyped or out of range (the message names it).

    ``option``: the option at fault without dashes (``"max_concurrent_jobs"``
    style or as written), or None when the problem is not one option's."""

    def __init__(self, message: str = "", *, option: str | None = None) -> None:
        super().__init__(message)
        self.option: str | None = option


class InputError(StsJobManagerError, ValueError):
    """User input (a prefix list or file, a name) cannot be used as it is.

    ``entry``: the 0-based index of the offending prefix in its list or
    file, or None when the problem is not one entry's."""

    def __init__(self, message: str = "", *, entry: int | None = None) -> None:
        super().__init__(message)
        self.entry: int | None = entry


class StateError(StsJobManagerError):
    """The state store failed, or its tables do not exist yet.

    ``http_status``: the HTTP status BigQuery answered, when it answered one."""

    def __init__(self, message: str = "", *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status: int | None = http_status


def _timestamp(text: str | None) -> datetime | None:
    if text is None:
        return None
    # fromisoformat before Python 3.11 does not read a trailing "Z".
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaseHeldError(StateError):
    """Another manager holds the job table's lease; one manager runs a job
    table at a time.

    ``holder`` (``host:pid:nonce`` of that manager), ``table`` (the job
    table) and ``until`` (when its lease expires, an aware datetime)."""

    def __init__(
        self,
        message: str = "",
        *,
        holder: str | None = None,
        table: str | None = None,
        until: str | None = None,
    ) -> None:
        super().__init__(message)
        self.holder: str | None = holder
        self.table: str | None = table
        self.until: datetime | None = _timestamp(until)


class TransferError(StsJobManagerError):
    """The transfer service refused or failed a call.

    ``status``: the google.rpc status name of the refusal (``"NOT_FOUND"``,
    ``"PERMISSION_DENIED"``, ...) when known; ``http_status``: the HTTP
    status STS answered, when it answered one."""

    def __init__(
        self, message: str = "", *, http_status: int | None = None, status: str | None = None
    ) -> None:
        super().__init__(message)
        self.http_status: int | None = http_status
        self.status: str | None = status


class StorageError(StsJobManagerError):
    """Reading a bucket failed (Cloud Storage, or the local engine's directories)."""


class UnsupportedBackendError(StsJobManagerError):
    """The requested backend is not available in this build."""


class MigrationTimeoutError(StsJobManagerError, TimeoutError):
    """``run_until_done`` ran out of time; ``summary`` is the last cycle's summary."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary: dict[str, Any] = summary or {}


__all__ = [
    "InputError",
    "LeaseHeldError",
    "MigrationTimeoutError",
    "OptionsError",
    "StateError",
    "StorageError",
    "StsJobManagerError",
    "TransferError",
    "UnsupportedBackendError",
]
