"""Bad input: a one-line error naming the problem, a non-zero exit code, and
the state left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Migration, sql, tool


def snapshot(state: Path) -> tuple[list, list]:
    jobs = sql(state, "SELECT * FROM sts_job ORDER BY prefix")
    history = sql(state, "SELECT * FROM sts_job_history ORDER BY rowid")
    return jobs, history


PREFIX_FILES = [
    ('{"logs/": 1}', "must hold a JSON array of strings"),
    ('["logs/", 7]', "entry 1: 7 is not a string"),
    ('["logs/", ""]', "empty prefix"),
    ('["logs/", "logs/"]', "'logs/' appears twice"),
    ('["/logs/"]', "starts with '/'"),
    (json.dumps(["x" * 1025]), "STS allows at most 1024"),
    ('["logs/"', "not valid JSON"),
    (json.dumps(["logs/", "a\x00x/"]), 'entry 1: "a\\0x/" contains a NUL byte'),
    (json.dumps(["a\rb/"]), "carriage return"),
    (json.dumps(["a\nb/"]), "line feed"),
    ('["logs/2019/", "data/", "logs/"]', "'logs/' is a prefix of 'logs/2019/'"),
]


@pytest.mark.parametrize(("body", "expected"), PREFIX_FILES)
def test_bad_prefix_files_load_nothing(migration: Migration, body: str, expected: str) -> None:
    migration.prepare()
    before = snapshot(migration.state)
    bad = migration.root.parent / "bad.json"
    bad.write_text(body)
    result = tool(
        "sts-prepare-tables",
        *migration.state_args(),
        "--job-prefix-source-file",
        str(bad),
        check=False,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(migration.state) == before


CONFIGS = [
    ({"max_concurent_jobs": 3}, "max_concurent_jobs"),
    ({"max-concurrent-jobs": "many"}, "max-concurrent-jobs"),
    ({"sleep_timeout": 100, "metrics_interval": 10}, "metrics-interval"),
    ({"job_table": "sts_job; DROP TABLE x"}, "not a plain table name"),
    ({"source_bucket": "Bad Bucket!"}, "not a valid bucket name"),
    ({"overwrite_dest_objects": "yes please"}, "overwrite-dest-objects"),
    ({"source_bucket": "goog-data"}, 'may not start with "goog"'),
    ({"destination_bucket": "192.168.0.1"}, "IP address"),
    ({"destination_bucket": "x" * 64}, "3 to 63"),
    ({"lease_seconds": 1e300}, "ten years"),
    ({"max_retries": -1}, "max-retries"),
]


@pytest.mark.parametrize(("config", "expected"), CONFIGS)
def test_bad_config_files_change_nothing(migration: Migration, config: dict, expected: str) -> None:
    migration.prepare()
    before = snapshot(migration.state)
    path = migration.root.parent / "config.json"
    path.write_text(json.dumps(config))
    result = tool(
        "sts-job-manager",
        *migration.backend_args(),
        "--config-path",
        str(path),
        "--exit-when-done",
        check=False,
    )
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(migration.state) == before
    assert migration.operations() == [], "no job was started"


def test_missing_config_file_is_named(migration: Migration) -> None:
    result = tool("sts-job-manager", "--config-path", "/nonexistent/config.json", check=False)
    assert result.returncode == 2
    assert "/nonexistent/config.json" in result.stderr


def test_unreadable_credentials_file_is_named(
    migration: Migration, monkeypatch: pytest.MonkeyPatch
) -> None:
    migration.prepare()
    monkeypatch.delenv("STORAGE_TRANSFER_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(migration.root / "missing-key.json"))
    result = tool(
        "sts-pause-all-jobs",
        "--transfer",
        "sts",
        "--project",
        "p",
        check=False,
    )
    assert result.returncode == 1, "credentials refused: exit 1 (README)"
    assert "could not load Google credentials" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_config_file_repeating_an_option_changes_nothing(migration: Migration) -> None:
    migration.prepare()
    before = snapshot(migration.state)
    path = migration.root.parent / "config.json"
    for body, expected in [
        ('{"job_table": "a", "job_table": "b"}', "'job_table' appears twice"),
        ('{"sleep_timeout": 1, "sleep-timeout": 2}', "given twice"),
    ]:
        path.write_text(body)
        result = tool(
            "sts-job-manager", *migration.backend_args(), "--config-path", str(path), check=False
        )
        assert result.returncode == 2
        assert expected in result.stderr, result.stderr
    assert snapshot(migration.state) == before


def test_new_prefixes_overlapping_loaded_ones_are_refused(migration: Migration) -> None:
    migration.prepare()
    before = snapshot(migration.state)
    more = migration.root.parent / "more.json"
    more.write_text(json.dumps([migration.prefixes[0] + "sub/"]))
    args = [*migration.state_args(), "--job-prefix-source-file", str(more)]
    result = tool("sts-prepare-tables", *args, check=False)
    assert result.returncode == 2
    assert "already in the job table" in result.stderr and "is a prefix of" in result.stderr
    assert snapshot(migration.state) == before
    # The user may choose overlaps.
    tool("sts-prepare-tables", *args, "--allow-overlapping-prefixes")
    assert len(snapshot(migration.state)[0]) == len(before[0]) + 1


def run_manager(migration: Migration, *extra: str):
    from conftest import FAST

    return tool(
        "sts-job-manager", *migration.backend_args(), *FAST, "--exit-when-done", *extra, check=False
    )


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_state_file_is_named_never_read_as_finished(
    migration: Migration, damage: str
) -> None:
    migration.prepare()
    data = migration.state.read_bytes()
    if damage == "garbage":
        migration.state.write_bytes(b"this is not SQLite at all " * 400)
    else:
        # The header survives; the pages of the tables do not.
        migration.state.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    result = run_manager(migration)
    assert result.returncode == 1, result.stderr
    assert "corrupt" in result.stderr
    assert not migration.operations(), "nothing may start from a corrupt state"


def test_a_state_path_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "state.db"
    result = tool("sts-status", "--state", f"sqlite:{missing}", check=False)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and str(missing) in result.stderr
    assert not (tmp_path / "no").exists(), "a directory was made"


def test_a_row_edited_by_hand_with_sqlites_own_timestamp_is_read(migration: Migration) -> None:
    migration.prepare()
    # What `UPDATE ... SET last_updated = CURRENT_TIMESTAMP` writes.
    sql(migration.state, "UPDATE sts_job SET last_updated = '2026-12-04 10:11:12'")
    result = tool("sts-status", *migration.state_args(), "--json", check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prefixes"]["waiting"] == len(migration.prefixes)
