"""sts-job-manager: migrate buckets with Storage Transfer Service, one prefix at a time.

>>> import sts_job_manager as sjm
>>> options = sjm.Options(state="sqlite:state.db", transfer="local:buckets")  # doctest: +SKIP
>>> sjm.prepare_tables(options)  # doctest: +SKIP
>>> sjm.Manager(options).run_once()["counts"]  # doctest: +SKIP
>>> sjm.State(options).progress()  # a pandas DataFrame (extra "analysis")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypedDict, Union

from . import _core, errors
from .errors import (
    InputError,
    LeaseHeldError,
    MigrationTimeoutError,
    OptionsError,
    StateError,
    StorageError,
    StsJobManagerError,
    TransferError,
    UnsupportedBackendError,
)

__version__: str = _core.__version__


class Options:
    """Every option of the tools, named like the command-line flags
    (``max_concurrent_jobs=5`` for ``--max-concurrent-jobs 5``).

    Values are validated at once; a bad one raises :class:`OptionsError`.
    Paths (``config_path``, ``job_prefix_source_file``) may be ``str`` or any
    path-like object (``pathlib.Path``).
    """

    def __init__(self, **options: Any) -> None:
        self._given = {
            key: os.fspath(value) if isinstance(value, os.PathLike) else value
            for key, value in options.items()
        }
        self._resolved: dict[str, Any] = json.loads(_core.resolve_options(json.dumps(self._given)))

    @classmethod
    def from_config_file(cls, path: str | os.PathLike[str], **overrides: Any) -> Options:
        """Options from a JSON config file (its values win, as on the command line)."""
        return cls(config_path=os.fspath(path), **overrides)

    def to_json(self) -> str:
        return json.dumps(self._given)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_resolved"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._given.items())
        return f"Options({given})"


Credentials = Union[str, Mapping[str, Any], "os.PathLike[str]", Callable[[], str]]
"""What ``credentials=`` takes: a credentials JSON (text, a mapping, or the
path of its file: a service account key, ``authorized_user`` or
``impersonated_service_account``), or a callable returning an OAuth access
token (called whenever a request needs one, e.g. an Airflow hook's)."""


def _credentials(
    credentials: Credentials | None, impersonation_chain: str | Sequence[str] | None
) -> dict[str, Any]:
    """Keyword arguments for the native calls; nothing when neither is given."""
    if credentials is None and not impersonation_chain:
        return {}
    if isinstance(credentials, Mapping):
        credentials = json.dumps(dict(credentials))
    elif isinstance(credentials, os.PathLike):
        with open(credentials) as file:
            credentials = file.read()
    chain = [impersonation_chain] if isinstance(impersonation_chain, str) else impersonation_chain
    return {
        "credentials": credentials,
        "impersonation_chain": list(chain) if chain else None,
    }


def _options_json(options: Options | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> str:
    if options is None:
        options = Options(**overrides)
    elif not isinstance(options, Options):
        options = Options(**{**options, **overrides})
    elif overrides:
        options = Options(**{**options._given, **overrides})
    return options.to_json()


class Manager:
    """The job manager. With ``transfer="local:ROOT"`` it also executes the
    transfers on background threads for as long as it lives.

    One manager runs a job table at a time: every run method first takes (or
    renews) the table's lease and raises :class:`LeaseHeldError` while
    another manager, a command-line ``sts-job-manager`` included, holds it.
    ``run_once`` and ``run_until_done`` give the lease up when they return;
    ``iteration`` keeps it (it expires ``lease_seconds`` after the last call,
    or is given up when the object is collected)."""

    def __init__(
        self,
        options: Options | Mapping[str, Any] | None = None,
        *,
        credentials: Credentials | None = None,
        impersonation_chain: str | Sequence[str] | None = None,
        **overrides: Any,
    ):
        """``credentials`` (see :data:`Credentials`) replace Application
        Default Credentials for every Google API the manager calls (even
        towards an emulator); ``impersonation_chain`` names service accounts
        to impersonate, the last one acting (as Airflow's), from
        ``credentials`` or Application Default Credentials. Keys and tokens
        are never logged."""
        self._native = _core.Manager(
            _options_json(options, overrides), **_credentials(credentials, impersonation_chain)
        )

    def run_once(self) -> dict[str, Any]:
        """One full cycle (sync, start jobs, sync). Returns a JSON-serialisable
        summary: ``counts`` per status, ``started``, ``resumed``, ``stalled``,
        ``errors``, ``progress``, ``failed`` (prefixes in error with their
        ``codes``, ``attempts`` and whether they are ``exhausted``),
        ``failed_count``, ``halted`` (what to fix, when the same permanent
        failure stopped new starts) and ``done``."""
        return json.loads(self._native.run_once())

    def iteration(self) -> dict[str, Any]:
        """One loop iteration honouring the job and metrics intervals."""
        return json.loads(self._native.iteration())

    def run_until_done(self, timeout: float | None = None) -> dict[str, Any]:
        """Loop (iteration, then sleep what is left of ``sleep_timeout``) until
        no prefix is pending or running; returns the last summary. Prefixes
        that ended in ``error`` are in its ``failed`` list and ``failed_count``
        (check them: the call returns normally). Raises :class:`TransferError`
        when the same permanent failure stopped new starts (its message says
        what to fix).

        Raises :class:`MigrationTimeoutError` (a :class:`TimeoutError`, with the
        last summary as ``.summary``) after ``timeout`` seconds. Ctrl-C stops
        it with KeyboardInterrupt; every state write is already committed.
        """
        return _finished(*self._native.run_until_done(timeout), timeout)

    async def run_once_async(self) -> dict[str, Any]:
        """:meth:`run_once` as a coroutine; it does not block the event loop."""
        return json.loads(await self._native.run_once_async())

    async def run_until_done_async(self, timeout: float | None = None) -> dict[str, Any]:
        """:meth:`run_until_done` as a coroutine; it does not block the event loop."""
        return _finished(*(await self._native.run_until_done_async(timeout)), timeout)


def _finished(done: bool, summary_json: str, timeout: float | None) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(summary_json)
    if not done:
        raise MigrationTimeoutError(
            f"prefixes still pending or running after {timeout} s: {summary['counts']}",
            summary,
        )
    return summary


def prepare_tables(
    options: Options | Mapping[str, Any] | None = None,
    *,
    prefixes: Iterable[str] | None = None,
    credentials: Credentials | None = None,
    impersonation_chain: str | Sequence[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Create the tables if missing, then load prefixes as ``waiting``: from
    ``prefixes`` (any iterable of strings, held in memory) or from the JSON
    file ``job_prefix_source_file``, not both. The list is checked whole
    first (an :class:`InputError` names the bad entry in ``.entry``) and
    loaded all or nothing; prefixes already present stay as they are.

    Returns ``{"loaded": int, "already_present": int}``.
    """
    if isinstance(prefixes, (str, bytes)):
        raise InputError("prefixes must be a list of strings, not one string")
    prefixes_json = None if prefixes is None else json.dumps(list(prefixes))
    return json.loads(
        _core.prepare_tables(
            _options_json(options, overrides),
            prefixes_json,
            **_credentials(credentials, impersonation_chain),
        )
    )


def pause_all_jobs(
    options: Options | Mapping[str, Any] | None = None,
    *,
    credentials: Credentials | None = None,
    impersonation_chain: str | Sequence[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Pause every running transfer operation of the project."""
    return json.loads(
        _core.pause_all_jobs(
            _options_json(options, overrides), **_credentials(credentials, impersonation_chain)
        )
    )


def remove_successful_one_time_jobs(
    options: Options | Mapping[str, Any] | None = None,
    *,
    credentials: Credentials | None = None,
    impersonation_chain: str | Sequence[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Delete every one-time job whose operations all succeeded."""
    return json.loads(
        _core.remove_successful_one_time_jobs(
            _options_json(options, overrides), **_credentials(credentials, impersonation_chain)
        )
    )


class PlannedPrefix(TypedDict):
    prefix: str
    objects: int
    bytes: int


class PlanResult(TypedDict):
    """What :func:`plan` proposed (and wrote or loaded)."""

    bucket: str
    planned: list[PlannedPrefix]
    objects: int
    bytes: int
    #: The largest prefix's bytes over the mean.
    balance: float
    list_requests: int
    #: With ``load=True``: prefixes loaded, and those already in the table.
    loaded: int | None
    already_present: int | None
    #: With ``out``: the file written.
    written_to: str | None


class _VerifyResult(TypedDict):
    """What :func:`verify` compared: one entry per prefix checked, with its
    verdict (``verification``) and the first offending objects."""

    checked: list[dict[str, Any]]
    #: Done prefixes verified since their last transfer (not checked again).
    skipped: int
    requeued: int
    list_requests: int
    bytes_compared: int


class VerifyResult(_VerifyResult, total=False):
    """What :func:`verify` compared; with ``objects``, also ``manifests``."""

    #: With ``objects``: each requeued prefix's manifest (``prefix``,
    #: ``location``, ``objects``, ``queued_at``).
    manifests: list[dict[str, Any]]


class _RequeueResult(TypedDict):
    #: Prefixes put back to ``waiting``.
    requeued: list[str]


class RequeueResult(_RequeueResult, total=False):
    #: With ``failed_objects``: each prefix's manifest (``prefix``,
    #: ``location``, ``objects``, ``queued_at``).
    manifests: list[dict[str, Any]]
    #: With ``failed_objects``: prefixes whose operation failed more objects
    #: than the transfer logs name (the manifest holds those named).
    warnings: list[str]


def _prefix_list(prefixes: Iterable[str] | None) -> list[str] | None:
    if isinstance(prefixes, (str, bytes)):
        raise InputError("prefixes must be a list of strings, not one string")
    return None if prefixes is None else list(prefixes)


def plan(
    options: Options | Mapping[str, Any] | None = None,
    *,
    shards: int | None = None,
    shard_bytes: int | str | None = None,
    out: str | os.PathLike[str] | None = None,
    load: bool = False,
    concurrency: int | None = None,
    source_inventory: str | None = None,
    credentials: Credentials | None = None,
    impersonation_chain: str | Sequence[str] | None = None,
    **overrides: Any,
) -> PlanResult:
    """List the source bucket (or plan from ``source_inventory``, a BigQuery
    inventory table) and propose prefixes balanced by bytes, as ``sts-plan``:
    about ``shards`` prefixes, or prefixes of at most ``shard_bytes`` each
    (``"500GB"``). ``out`` writes them as a JSON array; ``load=True`` loads
    them into the job table with their planned sizes. Nothing is written
    without either."""
    args = {
        "shards": shards,
        "shard_bytes": shard_bytes,
        "out": None if out is None else os.fspath(out),
        "load": load,
        "concurrency": concurrency,
        "source_inventory": source_inventory,
    }
    result: PlanResult = json.loads(
        _core.plan(
            _options_json(options, overrides),
            json.dumps(args),
            **_credentials(credentials, impersonation_chain),
        )
    )
    return result


def verify(
    options: Options | Mapping[str, Any] | None = None,
    *,
    prefixes: Iterable[str] | None = None,
    recheck_all: bool = False,
    requeue: bool = False,
    objects: bool = False,
    manifest_location: str | None = None,
    concurrency: int | None = None,
    source_inventory: str | None = None,
    destination_inventory: str | None = None,
    credentials: Credentials | None = None,
    impersonation_chain: str | Sequence[str] | None = None,
    **overrides: Any,
) -> VerifyResult:
    """Compare source and destination for every done prefix (or ``prefixes``,
    whatever their status), as ``sts-verify``: ``recheck_all`` checks every
    done prefix again whatever was verified before (``--all``); ``requeue``
    puts mismatched prefixes back to ``waiting``; with ``objects=True`` and
    ``manifest_location="gs://BUCKET/PATH/"`` each with a manifest of every
    missing or different object, so only those are copied again. Verdicts go to the
    verification table. A mismatch is reported, not raised: see
    ``verification["result"]`` of each entry of ``checked``. The options'
    ``preserve`` (``"storage-class,kms-key"``) compares that metadata too;
    ``move=True`` checks what a move left in the source instead."""
    args = {
        "prefix": _prefix_list(prefixes),
        "all": recheck_all,
        "requeue": requeue,
        "objects": objects,
        "manifest_location": manifest_location,
        "concurrency": concurrency,
        "source_inventory": source_inventory,
        "destination_inventory": destination_inventory,
    }
    result: VerifyResult = json.loads(
        _core.verify(
            _options_json(options, overrides),
            json.dumps(args),
            **_credentials(credentials, impersonation_chain),
        )
    )
    return result


def requeue(
    options: Options | Mapping[str, Any] | None = None,
    *,
    prefixes: Iterable[str] | None = None,
    failed_objects: bool = False,
    manifest_location: str | None = None,
    **overrides: Any,
) -> RequeueResult:
    """Put prefixes back to ``waiting`` with a fresh retry count, as
    ``sts-requeue``: ``prefixes`` (any status but running or paused), else
    every prefix in ``error``. Refused whole, naming the prefix, when one is
    unknown or in flight. ``failed_objects=True`` (``--failed-objects``, with
    ``manifest_location="gs://BUCKET/PATH/"``) requeues each prefix whose
    latest operation failed objects (or each of ``prefixes``) with a CSV
    manifest of them written there: its next start copies only those."""
    chosen = _prefix_list(prefixes)
    if failed_objects != (manifest_location is not None):
        raise InputError("failed_objects=True and manifest_location go together")
    result: RequeueResult = json.loads(
        _core.requeue(
            _options_json(options, overrides),
            None if chosen is None else json.dumps(chosen),
            manifest_location,
        )
    )
    return result


from .state import State  # noqa: E402  (it needs Options and _options_json above)

__all__ = [
    "Credentials",
    "InputError",
    "LeaseHeldError",
    "Manager",
    "MigrationTimeoutError",
    "Options",
    "OptionsError",
    "State",
    "StateError",
    "StorageError",
    "StsJobManagerError",
    "TransferError",
    "UnsupportedBackendError",
    "errors",
    "PlanResult",
    "PlannedPrefix",
    "RequeueResult",
    "VerifyResult",
    "pause_all_jobs",
    "plan",
    "prepare_tables",
    "remove_successful_one_time_jobs",
    "requeue",
    "verify",
]
