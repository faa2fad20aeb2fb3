"""The state tables as pandas DataFrames, for notebooks and dashboards.

Rows are read in Rust through the state store in use (SQLite or BigQuery)
and leave it as Arrow buffers, so a million history rows cost a few byte
strings, not a Python object per cell. Needs pandas and pyarrow::

    pip install 'sts-job-manager[analysis]'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _core

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from . import Credentials, Options

_EXTRA_HINT = (
    "sts_job_manager.State returns pandas DataFrames and needs pandas and pyarrow: "
    "pip install 'sts-job-manager[analysis]'"
)


def _libraries() -> tuple[Any, Any]:
    try:
        import pandas
        import pyarrow
    except ImportError as e:
        raise ImportError(_EXTRA_HINT) from e
    return pandas, pyarrow


def _arrow_table(native: tuple[int, list[Any]]) -> pa.Table:
    _, pa = _libraries()
    types = {
        "large_string": pa.large_string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "timestamp_us_utc": pa.timestamp("us", tz="UTC"),
    }
    rows, columns = native
    arrays, names = [], []
    for name, kind, validity, buffers in columns:
        # py_buffer wraps the bytes without copying them.
        bitmap = None if validity is None else pa.py_buffer(validity)
        arrays.append(
            pa.Array.from_buffers(types[kind], rows, [bitmap, *map(pa.py_buffer, buffers)])
        )
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    pd, pa = _libraries()

    def arrow_strings(kind: Any) -> Any:
        # Strings stay in their Arrow buffers (no Python str per cell);
        # numbers and timestamps become ordinary numpy columns.
        return pd.ArrowDtype(kind) if pa.types.is_large_string(kind) else None

    return table.to_pandas(types_mapper=arrow_strings)


class Timeline(NamedTuple):
    """:meth:`State.timeline`: two DataFrames over the same time buckets."""

    progress: pd.DataFrame
    """Per bucket (``time`` = its start): prefixes per status at its end,
    the figures at its end (``objects_found``, ``objects_copied``,
    ``bytes_found``, ``bytes_copied``, ``objects_failed`` (failing now),
    ``objects_failed_attempts``; README, "The figures"), ``bytes_per_second``
    within it (bytes copied between two snapshots spread evenly between
    them) and ``bucket_seconds`` (never less than the history's sampling
    interval)."""
    failures: pd.DataFrame
    """Per bucket and error code (the most frequent codes, the rest summed
    as ``OTHER``): ``objects_failed``, objects failing now at its end."""


class State:
    """Read-only views of a migration's job and history tables.

    Works on every state store (``state="sqlite:PATH"`` or BigQuery) because
    rows are read through the same store the manager writes. Each method
    reads the tables afresh. The DataFrame methods need the ``analysis``
    extra (pandas, pyarrow); ``status_counts`` needs nothing more.
    """

    def __init__(
        self,
        options: Options | Mapping[str, Any] | None = None,
        *,
        credentials: Credentials | None = None,
        impersonation_chain: str | Sequence[str] | None = None,
        **overrides: Any,
    ) -> None:
        """``credentials`` and ``impersonation_chain`` as for :class:`Manager`."""
        from . import _credentials, _options_json

        self._native = _core.State(
            _options_json(options, overrides), **_credentials(credentials, impersonation_chain)
        )

    @staticmethod
    def _frame(read: Callable[[], tuple[int, list[Any]]]) -> pd.DataFrame:
        _libraries()  # before the read: name the missing extra at once
        return _to_pandas(_arrow_table(read()))

    def jobs(self) -> pd.DataFrame:
        """The job table: ``prefix``, ``status``, ``job_name``, ``last_updated``."""
        return self._frame(self._native.jobs)

    def history(self) -> pd.DataFrame:
        """The history table, oldest first: ``prefix``, ``status``, ``job_name``,
        ``operation_results`` (the TransferOperation JSON), ``timestamp``."""
        return _to_pandas(self.history_arrow())

    def history_arrow(self) -> pa.Table:
        """:meth:`history` as a ``pyarrow.Table`` (no pandas conversion)."""
        _libraries()  # before the read: name the missing extra at once
        return _arrow_table(self._native.history())

    def failures(self) -> pd.DataFrame:
        """One row per object failing now: listed in the errorBreakdowns of
        each prefix's latest attempt (its latest operation's latest snapshot):
        ``prefix``, ``job_name`` (the operation), ``error_code``,
        ``error_count`` (objects failing now with that code),
        ``failed_attempts`` (failures with that code summed over every
        attempt of the prefix: an object failing in four attempts counts
        four times), ``object_url``, ``details``, ``time``. STS lists at most
        five objects per error code; a code without any gets one row whose
        ``object_url`` is null. Count ``error_count`` once per (prefix,
        error_code). README, "The figures"."""
        return self._frame(self._native.failures)

    def progress(self, retry_errors: bool | None = None) -> pd.DataFrame:
        """The figures (README, "The figures") per prefix (``scope ==
        "prefix"``), then one ``scope == "total"`` row (null prefix):
        ``status``, ``job_name``, ``objects_found/copied/skipped/failed/
        failed_attempts/left`` and the same for ``bytes_``, ``started``,
        ``updated`` (the latest attempt's), ``throughput_bytes_per_second``
        and ``eta_seconds``.

        On prefix rows the throughput is the latest attempt's (bytes copied
        since it started) and the ETA its bytes left at that rate (NaN when
        unknown or when the prefix is out of retries: it needs action). The
        total row's throughput and ETA are :meth:`status`'s (the last hour's
        rate; NaN, or an estimate while prefixes are not listed yet;
        ``eta_basis`` says which), so the two never disagree.
        ``retry_errors`` as for :meth:`status`."""
        return self._frame(lambda: self._native.progress(retry_errors))

    def verification(self) -> pd.DataFrame:
        """The verification table written by ``sts-verify``, one row per
        checked prefix: ``prefix``, ``result`` (``verified`` or ``mismatch``),
        ``objects_compared``, ``missing``, ``different``, ``checked_at`` and
        ``offending_objects`` (a JSON array of up to 100 object names) and
        ``stale`` (True when the prefix was requeued or transferred since the
        check, or is not ``done``: the verdict no longer speaks for it). Empty
        when nothing was verified yet."""
        frame = self._frame(self._native.verification)
        if "stale" in frame.columns:
            frame["stale"] = frame["stale"].astype(bool)
        return frame

    def failed_objects(self) -> pd.DataFrame:
        """Every failed object by name, as the manager read them from STS's
        transfer logs (Cloud Logging) into ``{job_table}_failed_objects``:
        ``prefix``, ``object``, ``action`` (``COPY`` or ``DELETE``),
        ``error_code`` (``PERMISSION_DENIED``, ...), ``message``,
        ``operation`` and ``time``; one row per operation, object and action.
        Unlike :meth:`failures` (STS keeps at most five samples per error
        code), every object is here. Empty when none failed, or with
        ``--no-object-logs``."""
        return self._frame(self._native.failed_objects)

    def plan(self) -> pd.DataFrame:
        """The plan table written by ``sts-plan --load``: ``prefix``,
        ``objects``, ``bytes`` as listed when planned. Empty without a plan."""
        return self._frame(self._native.plan)

    def timeline(self, max_buckets: int = 200) -> Timeline:
        """The migration over time, aggregated in Rust in one pass over the
        history (a million rows take seconds, not a pandas pivot of every
        row): at most ``max_buckets`` buckets of a round width (1 s to a day).
        See :class:`Timeline` for the columns."""
        _libraries()  # before the read: name the missing extra at once
        progress, failures = self._native.timeline(max_buckets)
        return Timeline(_to_pandas(_arrow_table(progress)), _to_pandas(_arrow_table(failures)))

    def status(self, limit: int = 20, retry_errors: bool | None = None) -> dict[str, Any]:
        """What ``sts-status --json`` prints: ``prefixes`` per status (and
        ``total``), ``objects`` and ``bytes`` (``found``, ``copied``,
        ``skipped``, ``failed`` (failing now), ``failed_attempts``, ``left``:
        README, "The figures"), ``unlisted_prefixes``, ``throughput`` over
        the last hour, ``eta`` (``seconds``, ``estimate``, ``basis``; prefixes
        out of retries are left out), ``needs_action`` (prefixes out of
        retries, at most ``limit``; ``needs_action_total``), ``stalled`` (no
        counter moved for 600 s), ``failing`` (at most ``limit``, most failed
        first; ``failing_total`` counts them all), ``error_codes``
        (objects failing now per code), ``pass`` (the current pass of
        ``sts-cutover``, ``None`` before its first run) and ``passes`` (each
        pass: ``pass``, ``kind``, ``started_at``, ``queued_at``, ``ended_at``,
        ``objects_found``, ``bytes_found``, ``objects_copied``,
        ``bytes_copied``, ``objects_deleted``). ``retry_errors`` defaults to the
        options' (``no_retry_on_job_error``); ``False`` counts prefixes in
        ``error`` as finished. Needs no pandas."""
        report: dict[str, Any] = json.loads(self._native.status(limit, retry_errors))
        return report

    def status_counts(self) -> dict[str, int]:
        """Prefixes per status, every status present (0 included)."""
        counts: dict[str, int] = json.loads(self._native.status_counts())
        return counts

    async def status_counts_async(self) -> dict[str, int]:
        """:meth:`status_counts` as a coroutine (for Airflow triggers)."""
        counts: dict[str, int] = json.loads(await self._native.status_counts_async())
        return counts

    def final_errors(self) -> list[str]:
        """The prefixes in ``error`` that no manager will start again under
        these options: failed more often since they were queued than
        ``max_retries`` allows, or every one with ``no_retry_on_job_error``.
        Only ``sts-requeue`` moves them on."""
        prefixes: list[str] = json.loads(self._native.final_errors())
        return prefixes

    async def final_errors_async(self) -> list[str]:
        """:meth:`final_errors` as a coroutine (for Airflow triggers)."""
        prefixes: list[str] = json.loads(await self._native.final_errors_async())
        return prefixes
