"""The Airflow integration, run with a real Apache Airflow installation
(tests/run.sh runs this folder with the Python of .venv-airflow)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred

import sts_job_manager as sjm
from conftest import Migration, make_migration
from sts_job_manager.airflow import (
    StsJobManagerRunOperator,
    StsMigrationDoneSensor,
    StsMigrationDoneTrigger,
    StsPrepareTablesOperator,
)
from sts_job_manager.airflow._compat import AirflowException

DAG_FILE = Path(__file__).resolve().parent / "dags" / "sts_migration.py"
AIRFLOW = Path(sys.executable).parent / "airflow"


def airflow(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "LOGLEVEL": "WARNING",
    }
    result = subprocess.run(
        [str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_dag_completes_a_migration(tmp_path: Path) -> None:
    migration = make_migration(tmp_path / "migration", prefixes=4, files_per_prefix=2)
    migration.prefix_file.write_text(json.dumps(migration.prefixes))
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(DAG_FILE, home / "dags")
    record = tmp_path / "xcoms.json"
    (home / "dags" / "migration.json").write_text(
        json.dumps(
            {
                # One-time jobs, one per prefix, so the DAG's cleanup task
                # has jobs to remove (reusable jobs are not one-time jobs).
                "options": migration.options(no_job_reuse=True),
                "prefix_file": str(migration.prefix_file),
                "record": str(record),
            }
        )
    )
    airflow(home, "db", "migrate")
    airflow(home, "dags", "reserialize")
    airflow(home, "dags", "test", "sts_migration")

    migration.assert_copied()
    assert {status for status, _ in migration.jobs().values()} == {"done"}
    xcoms = json.loads(record.read_text())
    assert xcoms["prepare_tables"] == {"loaded": 4, "already_present": 0}
    assert xcoms["first_cycle"]["started"] == [migration.prefixes[0]]
    assert xcoms["run_until_done"]["done"] is True
    assert xcoms["wait_until_done"]["done"] == 4
    assert xcoms["remove"]["count"] == 4
    assert xcoms["pause"]["count"] == 0
    engine_jobs = migration.engine_jobs()
    assert {job["status"] for job in engine_jobs} == {"DELETED"}


def test_operators_validate_options_at_construction() -> None:
    with pytest.raises(sjm.OptionsError):
        StsJobManagerRunOperator(task_id="bad", options={"max_concurrent_jobs": "many"})
    with pytest.raises(ValueError, match="until_done"):
        StsJobManagerRunOperator(task_id="t", options={}, timeout=5)
    with pytest.raises(TypeError):
        StsJobManagerRunOperator("positional", options={})  # type: ignore[misc]
    templated = StsPrepareTablesOperator(task_id="t", options={"state": "sqlite:{{ ds }}.db"})
    assert "options" in templated.template_fields


def test_trigger_serialize_round_trips() -> None:
    trigger = StsMigrationDoneTrigger(
        options={"state": "sqlite:/x.db"}, poll_interval=5, fail_on_error=True
    )
    path, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    module, _, name = path.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert path == "sts_job_manager.airflow.triggers.StsMigrationDoneTrigger"


async def events(trigger: StsMigrationDoneTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def test_sensor_defers_and_trigger_fires_once_when_the_migration_ends(
    migration: Migration,
) -> None:
    migration.prepare()
    migration.set_faults(bytes_per_second=8000)
    options = migration.options()
    sensor = StsMigrationDoneSensor(
        task_id="wait", options=options, deferrable=True, poke_interval=0.2
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, StsMigrationDoneTrigger)
    assert deferred.value.method_name == "execute_complete"

    async def drive_and_wait() -> list[dict]:
        # The manager and the trigger share one event loop: the trigger's
        # polling must not block the manager's work, nor the reverse.
        manager = sjm.Manager(options)
        waiting = asyncio.ensure_future(events(trigger))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "fired before the migration ended"
        await manager.run_until_done_async(timeout=120)
        return await asyncio.wait_for(waiting, 60)

    fired = asyncio.run(drive_and_wait())
    assert len(fired) == 1
    assert fired[0]["status"] == "success"
    assert fired[0]["counts"]["done"] == len(migration.prefixes)
    assert sensor.execute_complete({}, fired[0]) == fired[0]["counts"]


def test_trigger_turns_failures_into_one_error_event(tmp_path: Path) -> None:
    missing = StsMigrationDoneTrigger(options={"state": f"sqlite:{tmp_path / 'none.db'}"})
    fired = asyncio.run(events(missing))
    assert len(fired) == 1
    assert fired[0]["status"] == "error"
    assert "sts-prepare-tables" in fired[0]["message"]
    sensor = StsMigrationDoneSensor(task_id="w", options={}, deferrable=True)
    with pytest.raises(AirflowException, match="sts-prepare-tables"):
        sensor.execute_complete({}, fired[0])


def test_sensor_fails_on_error_prefixes_when_asked(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=2, files_per_prefix=1)
    migration.prepare()
    migration.set_faults(fail_objects_matching="data/p00/*")
    sjm.Manager(migration.options(no_retry_on_job_error=True)).run_until_done(timeout=120)
    sensor = StsMigrationDoneSensor(
        task_id="w", options=migration.options(), fail_on_error=True, deferrable=False
    )
    with pytest.raises(AirflowException, match="error"):
        sensor.poke({})
    trigger = StsMigrationDoneTrigger(options=migration.options(), fail_on_error=True)
    fired = asyncio.run(events(trigger))
    assert [e["status"] for e in fired] == ["error"]
    assert fired[0]["counts"]["error"] == 1


def test_sensor_fails_when_every_prefix_left_is_out_of_retries(tmp_path: Path) -> None:
    migration = make_migration(tmp_path, prefixes=2, files_per_prefix=1)
    migration.prepare()
    migration.set_faults(fail_objects_matching="data/p00/*")
    sjm.Manager(migration.options(max_retries=0)).run_until_done(timeout=120)
    # Retries left under these options: the manager would start it again.
    patient = StsMigrationDoneSensor(
        task_id="w", options=migration.options(max_retries=5), deferrable=False
    )
    assert patient.poke({}) is False
    # Out of retries: nothing can move until a requeue, so the wait fails.
    sensor = StsMigrationDoneSensor(
        task_id="w", options=migration.options(max_retries=0), deferrable=False
    )
    with pytest.raises(AirflowException, match="out of retries.*'data/p00/'.*sts-requeue"):
        sensor.poke({})
    trigger = StsMigrationDoneTrigger(options=migration.options(max_retries=0), poll_interval=0.1)
    fired = asyncio.run(events(trigger))
    assert [e["status"] for e in fired] == ["error"]
    assert "sts-requeue" in fired[0]["message"] and fired[0]["counts"]["error"] == 1


def test_the_package_is_an_airflow_provider() -> None:
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "sts-job-manager" in providers
    info = providers["sts-job-manager"].data
    assert info["hooks"][0]["python-modules"] == ["sts_job_manager.airflow.hooks"]
    assert "sts_job_manager.airflow.triggers" in info["triggers"][0]["python-modules"]


def test_run_trigger_serialize_round_trips() -> None:
    from sts_job_manager.airflow import StsJobManagerRunTrigger

    trigger = StsJobManagerRunTrigger(
        options={"state": "sqlite:/x.db"},
        poll_interval=2,
        gcp_conn_id="my_gcp",
        impersonation_chain=["a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"],
    )
    path, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    module, _, name = path.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)


def test_connection_extras_become_core_credentials(tmp_path: Path) -> None:
    from sts_job_manager.airflow.hooks import credentials_from_extras

    key = {"type": "service_account", "client_email": "x@p.iam.gserviceaccount.com"}
    kwargs = credentials_from_extras({"keyfile_dict": key}, "target@p.iam.gserviceaccount.com")
    assert json.loads(kwargs["credentials"]) == key
    assert kwargs["impersonation_chain"] == ["target@p.iam.gserviceaccount.com"]
    path = tmp_path / "key.json"
    path.write_text(json.dumps(key))
    legacy = {"extra__google_cloud_platform__key_path": str(path)}
    assert json.loads(credentials_from_extras(legacy, None)["credentials"]) == key
    assert credentials_from_extras({}, None) == {}


def test_deferrable_run_operator_defers_after_its_first_cycle(migration: Migration) -> None:
    from sts_job_manager.airflow import StsJobManagerRunTrigger

    migration.prepare()
    migration.set_faults(bytes_per_second=2000)
    operator = StsJobManagerRunOperator(
        task_id="run", options=migration.options(), until_done=True, deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, StsJobManagerRunTrigger)
    fired = asyncio.run(events(trigger))  # type: ignore[arg-type]
    assert [e["status"] for e in fired] == ["success"]
    summary = operator.execute_complete({}, fired[0])
    assert summary["done"] is True
    assert {status for status, _ in migration.jobs().values()} == {"done"}
