"""The native core of sts_job_manager (Rust, built with PyO3).

Options travel as JSON objects whose keys are the command-line option names
(dashes or underscores); results come back as JSON text. Errors are raised as
the classes of :mod:`sts_job_manager.errors`.
"""

__version__: str

def cli_main(program: str, args: list[str]) -> int:
    """Run one command-line tool (e.g. ``"sts-job-manager"``) with ``args``.

    Returns the process exit code: 0 done, 1 failed, 2 bad usage or input.
    """

def resolve_options(options_json: str) -> str:
    """Validate options (a JSON object) and return every option as JSON."""

def prepare_tables(options_json: str) -> str:
    """Create the tables if missing and load ``job-prefix-source-file``.

    Returns ``{"loaded": int, "already_present": int}`` as JSON.
    """

def pause_all_jobs(options_json: str) -> str:
    """Pause every running operation; returns ``{"count", "errors"}`` as JSON."""

def remove_successful_one_time_jobs(options_json: str) -> str:
    """Delete successful one-time jobs; returns ``{"count", "errors"}`` as JSON."""

class Manager:
    """The job manager. With the local engine it also executes transfers on
    background threads for as long as the object lives."""

    def __init__(self, options_json: str) -> None: ...
    def run_once(self) -> str:
        """One full cycle (sync, start jobs, sync); the summary as JSON."""
    def iteration(self) -> str:
        """One loop iteration honouring the intervals; the summary as JSON."""
