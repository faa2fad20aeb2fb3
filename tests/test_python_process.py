"""The Python module in forked processes, prefixes in memory, path-like
arguments and exceptions that carry their data as attributes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import sts_job_manager as sjm
from conftest import Migration, sql

# Runs in a fresh interpreter: pytest's own process has threads of its own
# and turns warnings into errors, so forking it would test pytest, not us.
FORK_SCRIPT = """
import asyncio, json, os, sys
import sts_job_manager as sjm

root, state, call_first = sys.argv[1], sys.argv[2], sys.argv[3] == "yes"
options = sjm.Options(state=f"sqlite:{state}", transfer=f"local:{root}",
                      sleep_timeout=0.2, job_interval=0.2, metrics_interval=0.2)
if call_first:
    # The parent's runtime is running (blocking and async calls) before the fork.
    sjm.prepare_tables(options)
    asyncio.run(sjm.State(options).status_counts_async())

pid = os.fork()
if pid == 0:
    try:
        report = sjm.prepare_tables(options, prefixes=["data/p00/", "data/p01/"])
        summary = sjm.Manager(options).run_until_done(timeout=120)
        counts = asyncio.run(sjm.State(options).status_counts_async())
        print(json.dumps({"report": report, "done": summary["done"], "counts": counts}))
        sys.stdout.flush()
        os._exit(0)
    except BaseException as e:
        print(f"child failed: {e!r}", file=sys.stderr)
        os._exit(1)
_, status = os.waitpid(pid, 0)
# The parent's runtime still works after the fork.
print(json.dumps(sjm.State(options).status_counts()))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("call_first", ["yes", "no"], ids=["used-before-fork", "import-only"])
def test_a_forked_child_gets_its_own_runtime(migration: Migration, call_first: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, str(migration.root), str(migration.state), call_first],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    child, parent = run.stdout.strip().splitlines()
    assert '"loaded": 2' in child
    assert '"done": true' in child
    assert '"done": 2' in child, child
    assert '"done": 2' in parent, parent


INHERITED_SCRIPT = """
import json, os, sys
import sts_job_manager as sjm

root, state = sys.argv[1], sys.argv[2]
options = sjm.Options(state=f"sqlite:{state}", transfer=f"local:{root}",
                      sleep_timeout=0.2, job_interval=0.2, metrics_interval=0.2)
sjm.prepare_tables(options, prefixes=["data/p00/"])
manager = sjm.Manager(options)
manager.run_once()
state = sjm.State(options)
pid = os.fork()
if pid == 0:
    outcome = {}
    # A hang here would end the test at its timeout.
    for name, call in (("manager", manager.run_once), ("state", state.status_counts)):
        try:
            call()
            outcome[name] = "worked"
        except RuntimeError as e:
            outcome[name] = str(e)
    print(json.dumps(outcome))
    sys.stdout.flush()
    os._exit(0)
_, status = os.waitpid(pid, 0)
manager.run_once()  # the parent's Manager still works
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_manager_built_before_a_fork_is_refused_in_the_child_at_once(
    migration: Migration,
) -> None:
    import json

    run = subprocess.run(
        [sys.executable, "-c", INHERITED_SCRIPT, str(migration.root), str(migration.state)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    for name in ("manager", "state"):
        assert "before a fork" in outcome[name], outcome
        assert "create a new" in outcome[name]


def test_a_multiprocessing_fork_pool_calls_the_core(migration: Migration) -> None:
    script = textwrap.dedent(
        """
        import multiprocessing, sys
        import sts_job_manager as sjm

        def counts(state):
            return sjm.State(state=f"sqlite:{state}").status_counts()["waiting"]

        if __name__ == "__main__":
            sjm.prepare_tables(state=f"sqlite:{sys.argv[1]}", prefixes=["a/", "b/", "c/"])
            with multiprocessing.get_context("fork").Pool(2) as pool:
                print(pool.map(counts, [sys.argv[1]] * 4))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(migration.state)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[3, 3, 3, 3]"


def test_prefixes_load_from_memory_and_paths_may_be_path_objects(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    options = sjm.Options(state=f"sqlite:{state}")
    first = sjm.prepare_tables(options, prefixes=(p for p in ["a/", "b/"]))
    assert first == {"loaded": 2, "already_present": 0}
    again = sjm.prepare_tables(options, prefixes=["b/", "c/"])
    assert again == {"loaded": 1, "already_present": 1}
    prefix_file = tmp_path / "more.json"
    prefix_file.write_text('["d/"]')
    from_path = sjm.prepare_tables(options, job_prefix_source_file=prefix_file)
    assert from_path == {"loaded": 1, "already_present": 0}
    config = tmp_path / "config.json"
    config.write_text('{"job-table": "other_job"}')
    assert sjm.Options.from_config_file(config).job_table == "other_job"
    assert sjm.Options(config_path=config).job_table == "other_job"
    rows = sql(state, "SELECT prefix, status FROM sts_job ORDER BY prefix")
    assert rows == [("a/", "waiting"), ("b/", "waiting"), ("c/", "waiting"), ("d/", "waiting")]


@pytest.mark.parametrize(
    ("prefixes", "entry", "message"),
    [
        (["a/", ""], 1, "entry 1: empty prefix"),
        (["a/", "b/", "a/"], 2, "'a/' appears twice"),
        (["ok/", 7], 1, "7 is not a string"),
    ],
)
def test_a_bad_prefix_list_names_its_entry_and_loads_nothing(
    tmp_path: Path, prefixes: list, entry: int, message: str
) -> None:
    state = tmp_path / "state.db"
    sjm.prepare_tables(state=f"sqlite:{state}", prefixes=["kept/"])
    with pytest.raises(sjm.InputError, match=message) as raised:
        sjm.prepare_tables(state=f"sqlite:{state}", prefixes=prefixes)
    assert raised.value.entry == entry
    assert sjm.State(state=f"sqlite:{state}").status_counts()["waiting"] == 1


def test_prefixes_and_a_prefix_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(sjm.InputError, match="not both") as raised:
        sjm.prepare_tables(
            state=f"sqlite:{tmp_path / 's.db'}",
            prefixes=["a/"],
            job_prefix_source_file=tmp_path / "p.json",
        )
    assert raised.value.entry is None
    with pytest.raises(sjm.InputError, match="not one string"):
        sjm.prepare_tables(state=f"sqlite:{tmp_path / 's.db'}", prefixes="a/")


def test_option_errors_name_the_option() -> None:
    with pytest.raises(sjm.OptionsError) as raised:
        sjm.Options(max_concurrent_jobs="many")
    assert raised.value.option == "max-concurrent-jobs"
    with pytest.raises(sjm.OptionsError) as unknown:
        sjm.Options(no_such_option=1)
    assert unknown.value.option == "no_such_option"


def test_a_held_lease_is_raised_with_its_holder_and_expiry(migration: Migration) -> None:
    migration.prepare()
    manager = sjm.Manager(migration.options())
    manager.run_once()  # creates the lease table (and gives the lease up)
    until = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=5)
    sql(
        migration.state,
        "INSERT OR REPLACE INTO sts_job_lease (id, holder, until) VALUES (1, 'other-host:7:7', ?)",
        (until.isoformat().replace("+00:00", "Z"),),
    )
    with pytest.raises(sjm.LeaseHeldError) as raised:
        manager.run_once()
    error = raised.value
    assert (error.holder, error.table, error.until) == ("other-host:7:7", "sts_job", until)
    assert isinstance(error, sjm.StateError)
    assert "other-host:7:7" in str(error)
