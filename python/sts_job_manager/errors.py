"""Exceptions raised by sts_job_manager; every one derives from StsJobManagerError."""

from __future__ import annotations

from typing import Any


class StsJobManagerError(Exception):
    """Base of every error raised by sts_job_manager."""


class OptionsError(StsJobManagerError, ValueError):
    """An option is unknown, mistyped or out of range (the message names it)."""


class InputError(StsJobManagerError, ValueError):
    """User input (a prefix file, a name) cannot be used as it is."""


class StateError(StsJobManagerError):
    """The state store failed, or its tables do not exist yet."""


class LeaseHeldError(StateError):
    """Another manager holds the job table's lease (the message names it and
    says until when); one manager runs a job table at a time."""


class TransferError(StsJobManagerError):
    """The transfer service refused or failed a call."""


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
