"""The native core of sts_job_manager (Rust, built with PyO3).

Options travel as JSON objects whose keys are the command-line option names
(dashes or underscores); results come back as JSON text. Errors are raised as
the classes of :mod:`sts_job_manager.errors`, with their data as attributes
(``LeaseHeldError.holder``, ``.table``, ``.until``; ``InputError.entry``;
``OptionsError.option``; ``StateError.http_status``; ``TransferError.status``
and ``.http_status``).
"""

from collections.abc import Awaitable, Callable
from typing import final

# A credentials JSON (text) or a callable returning an OAuth access token.
_Credentials = str | Callable[[], str]

__all__ = [
    "__version__",
    "cli_main",
    "resolve_options",
    "prepare_tables",
    "pause_all_jobs",
    "remove_successful_one_time_jobs",
    "plan",
    "verify",
    "requeue",
    "Manager",
    "State",
]

__version__: str

def cli_main(program: str, args: list[str]) -> int:
    """Run one command-line tool (e.g. ``"sts-job-manager"``) with ``args``.

    Returns the process exit code: 0 done, 1 failed, 2 bad usage or input.
    """

def resolve_options(options_json: str) -> str:
    """Validate options (a JSON object) and return every option as JSON."""

def prepare_tables(
    options_json: str,
    prefixes_json: str | None = None,
    credentials: _Credentials | None = None,
    impersonation_chain: list[str] | None = None,
) -> str:
    """Create the tables if missing and load prefixes as ``waiting``: the JSON
    array ``prefixes_json`` if given, else ``job-prefix-source-file``.

    Returns ``{"loaded": int, "already_present": int}`` as JSON. A bad entry
    raises ``InputError`` with its index as ``.entry``.
    """

def pause_all_jobs(
    options_json: str,
    credentials: _Credentials | None = None,
    impersonation_chain: list[str] | None = None,
) -> str:
    """Pause every running operation; returns ``{"count", "errors"}`` as JSON."""

def remove_successful_one_time_jobs(
    options_json: str,
    credentials: _Credentials | None = None,
    impersonation_chain: list[str] | None = None,
) -> str:
    """Delete successful one-time jobs; returns ``{"count", "errors"}`` as JSON."""

def plan(
    options_json: str,
    args_json: str,
    credentials: _Credentials | None = None,
    impersonation_chain: list[str] | None = None,
) -> str:
    """``sts-plan`` with ``args_json``, a JSON object of its own flags
    (``{"shards": 50, "load": true}``); returns the plan report as JSON."""

def verify(
    options_json: str,
    args_json: str,
    credentials: _Credentials | None = None,
    impersonation_chain: list[str] | None = None,
) -> str:
    """``sts-verify`` with ``args_json``, a JSON object of its own flags
    (``{"prefix": ["a/"], "all": true}``); returns the report as JSON."""

def requeue(
    options_json: str,
    prefixes_json: str | None = None,
    manifest_location: str | None = None,
) -> str:
    """``sts-requeue`` of the JSON array ``prefixes_json`` (every prefix in
    ``error`` without it); with ``manifest_location`` (``--failed-objects``),
    each with a manifest of its failed objects written there. Returns
    ``{"requeued": [...], "manifests": [...]}`` as JSON."""

@final
class Manager:
    """The job manager. With the local engine it also executes transfers on
    background threads for as long as the object lives. Every run method takes
    the job table's lease first (``LeaseHeldError`` while another manager has
    it); ``run_once`` and ``run_until_done`` give it up when they return."""

    def __new__(
        cls,
        options_json: str,
        credentials: _Credentials | None = None,
        impersonation_chain: list[str] | None = None,
    ) -> Manager:
        """``credentials`` replace Application Default Credentials for every
        Google client (even towards an emulator); ``impersonation_chain``:
        service accounts to impersonate, the last one acting."""
    def run_once(self) -> str:
        """One full cycle (sync, start jobs, sync); the summary as JSON."""
    def iteration(self) -> str:
        """One loop iteration honouring the intervals; the summary as JSON."""
    def run_until_done(self, timeout: float | None = None) -> tuple[bool, str]:
        """Iterate until nothing is pending or running, or ``timeout`` seconds.

        Returns ``(finished, last summary as JSON)``; Ctrl-C raises KeyboardInterrupt.
        """
    def run_once_async(self) -> Awaitable[str]:
        """``run_once`` as an awaitable, run on the shared tokio runtime."""
    def run_until_done_async(self, timeout: float | None = None) -> Awaitable[tuple[bool, str]]:
        """``run_until_done`` as an awaitable."""

# (name, Arrow type: "large_string" | "int64" | "float64" | "timestamp_us_utc",
#  validity bitmap or None when no value is null, data buffers: for strings
#  the int64 offsets then the UTF-8 bytes; otherwise the little-endian values)
_Column = tuple[str, str, bytes | None, list[bytes]]
# (row count, columns)
_Frame = tuple[int, list[_Column]]

@final
class State:
    """The state tables, read through the configured state store."""

    def __new__(
        cls,
        options_json: str,
        credentials: _Credentials | None = None,
        impersonation_chain: list[str] | None = None,
    ) -> State: ...
    def jobs(self) -> _Frame:
        """The job table as Arrow buffers."""
    def history(self) -> _Frame:
        """The history table as Arrow buffers, oldest first."""
    def failures(self) -> _Frame:
        """One row per failing object of each prefix's latest attempt."""
    def progress(self, retry_errors: bool | None = None) -> _Frame:
        """The figures, throughput and ETA per prefix, then a total row."""
    def verification(self) -> _Frame:
        """The verification table (sts-verify) as Arrow buffers."""
    def failed_objects(self) -> _Frame:
        """The failed-objects table (read from transfer logs) as Arrow buffers."""
    def plan(self) -> _Frame:
        """The plan table (sts-plan --load) as Arrow buffers."""
    def timeline(self, max_buckets: int = 200) -> tuple[_Frame, _Frame]:
        """(per time bucket: prefixes per status, objects/bytes copied,
        bytes_per_second, objects_failed; per bucket and error code: failed
        objects so far), from one pass over the history."""
    def status(self, limit: int = 20, retry_errors: bool | None = None) -> str:
        """The ``sts-status --json`` report as JSON."""
    def status_counts(self) -> str:
        """Prefixes per status as a JSON object."""
    def status_counts_async(self) -> Awaitable[str]:
        """``status_counts`` as an awaitable."""
    def final_errors(self) -> str:
        """Prefixes in error that no manager will start again, as a JSON list."""
    def final_errors_async(self) -> Awaitable[str]:
        """``final_errors`` as an awaitable."""
