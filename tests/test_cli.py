"""The installed console scripts: each lists and accepts only its own options,
the original toolkit's flags and spellings still parse, `--version`, exit codes."""

from __future__ import annotations

import json
import re

import pytest

import sts_job_manager as sjm
from conftest import Migration, sql, tool

STATE = {"--state", "--dataset", "--dataset-location", "--job-table", "--job-history-table"}
GENERAL = {"--help", "--version", "--config-path", "--project"}
MANAGER = {
    *GENERAL,
    *STATE,
    "--transfer",
    "--source-bucket",
    "--destination-bucket",
    "--overwrite-dest-objects",
    "--max-concurrent-jobs",
    "--no-retry-on-job-error",
    "--allow-new-jobs-when-stalled",
    "--max-retries",
    "--no-job-reuse",
    "--no-object-logs",
    "--preserve",
    "--move",
    "--start-timeout",
    "--sleep-timeout",
    "--metrics-interval",
    "--job-interval",
    "--reconcile-interval",
    "--stall-after",
    "--lease-seconds",
    "--exit-when-done",
    "--publish-heartbeat",
    "--stackdriver-project",
}
OWN_OPTIONS = {
    "sts-job-manager": MANAGER,
    "sts-prepare-tables": {
        *GENERAL,
        *STATE,
        "--job-prefix-source-file",
        "--allow-overlapping-prefixes",
    },
    "sts-requeue": {
        *GENERAL,
        *STATE,
        "--job-prefix-source-file",
        "--transfer",
        "--failed-objects",
        "--manifest-location",
    },
    "sts-pause-all-jobs": {*GENERAL, "--transfer"},
    "sts-remove-successful-one-time-jobs": {*GENERAL, "--transfer"},
    "sts-doctor": {
        *GENERAL,
        *STATE,
        "--source-bucket",
        "--destination-bucket",
        "--publish-heartbeat",
        "--stackdriver-project",
        "--move",
    },
}


def listed_options(help_text: str) -> set[str]:
    """The long option each help line that starts with a dash names."""
    found = set()
    for line in help_text.splitlines():
        match = re.match(r"\s*(?:-\w, )?(--[a-z-]+)", line)
        if match:
            found.add(match.group(1))
    return found


@pytest.mark.parametrize("name", sorted(OWN_OPTIONS))
def test_each_tool_lists_only_its_own_options(name: str) -> None:
    result = tool(name, "--help")
    assert listed_options(result.stdout) == OWN_OPTIONS[name], result.stdout
    if name != "sts-job-manager":
        assert "--max-concurrent-jobs" not in result.stdout
        refused = tool(name, "--max-concurrent-jobs", "3", check=False)
        assert refused.returncode == 2
        assert "unexpected argument '--max-concurrent-jobs'" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert tool(name, "--version").stdout == f"{name} {sjm.__version__}\n"


@pytest.mark.parametrize("name", ["sts-emulator", "sts-quickstart"])
def test_the_other_tools_have_help_and_version(name: str) -> None:
    assert tool(name, "--version").stdout == f"{name} {sjm.__version__}\n"
    assert "--sleep-timeout" not in tool(name, "--help").stdout
    refused = tool(name, "--sleep-timeout", "5", check=False)
    assert refused.returncode == 2


def test_manager_help_shows_groups_and_defaults() -> None:
    text = tool("sts-job-manager", "--help").stdout
    for heading in ["State (the job and history tables):", "Transfer jobs:", "The loop:"]:
        assert heading in text
    for default in ["[default: 1200]", "[default: 300]", "[default: 20]", "[default: sts_job]"]:
        assert default in text


def test_pause_all_jobs_is_not_held_to_the_managers_checks(migration: Migration) -> None:
    """A config file shared with the manager: its manager-only keys (here ones
    the manager itself would refuse) do not stop the other tools."""
    config = migration.root.parent / "shared.json"
    shared = {"sleep_timeout": 900, "metrics_interval": 10, "transfer": f"local:{migration.root}"}
    config.write_text(json.dumps(shared))
    result = tool("sts-pause-all-jobs", "--config-path", str(config))
    assert result.stdout.startswith("Paused 0 ")
    refused = tool("sts-job-manager", "--config-path", str(config), check=False)
    assert refused.returncode == 2
    assert "metrics-interval" in refused.stderr


def test_every_original_flag_parses(migration: Migration) -> None:
    prefixes = migration.root.parent / "prefixes.json"
    prefixes.write_text('["a/", "b/"]')
    original_prepare = [
        "--dataset",
        "ds",
        "--dataset-location",
        "EU",
        "--job-prefix-source-file",
        str(prefixes),
        "--job-table",
        "jobs",
        "--job-history-table",
        "jobs_history",
    ]
    tool("sts-prepare-tables", *migration.state_args(), *original_prepare)
    assert sql(migration.state, "SELECT prefix, status FROM jobs ORDER BY prefix") == [
        ("a/", "waiting"),
        ("b/", "waiting"),
    ]
    original_manager = [
        "--dataset",
        "ds",
        "--dataset-location",
        "EU",
        "--job-table",
        "missing_table",
        "--job-history-table",
        "missing_history",
        "--source-bucket",
        migration.source_bucket,
        "--destination-bucket",
        migration.destination_bucket,
        "--job-interval",
        "1200",
        "--metrics-interval",
        "300",
        "--max-concurrent-jobs",
        "20",
        "--no-retry-on-job-error",
        "--allow-new-jobs-when-stalled",
        "--allow-new-jobs-on-stalled",
        "--publish-heartbeat",
        "--stackdriver-project",
        "p",
        "--overwrite-dest-objects",
        "--sleep-timeout",
        "60",
    ]
    # Parsed and validated, then stopped by the missing tables (exit 1, not 2).
    result = tool("sts-job-manager", *migration.backend_args(), *original_manager, check=False)
    assert result.returncode == 1, result.stderr
    assert "sts-prepare-tables" in result.stderr, result.stderr
