"""A small migration driven by the sts_job_manager operators and sensor.

The test writes ``migration.json`` beside this file: the options naming the
embedded backends, the prefix file and where to record the XComs.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from sts_job_manager.airflow import (
    StsJobManagerRunOperator,
    StsMigrationDoneSensor,
    StsPauseAllJobsOperator,
    StsPrepareTablesOperator,
    StsRemoveSuccessfulOneTimeJobsOperator,
)

CONFIG = json.loads(Path(__file__).with_name("migration.json").read_text())
OPTIONS = CONFIG["options"]
TASKS = ["prepare_tables", "first_cycle", "run_until_done", "wait_until_done", "remove", "pause"]


def record(ti: Any, **_: Any) -> None:
    xcoms = {task: ti.xcom_pull(task_ids=task) for task in TASKS}
    Path(CONFIG["record"]).write_text(json.dumps(xcoms))


with DAG("sts_migration", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    (
        StsPrepareTablesOperator(
            task_id="prepare_tables",
            options=OPTIONS,
            job_prefix_source_file=CONFIG["prefix_file"],
        )
        >> StsJobManagerRunOperator(task_id="first_cycle", options=OPTIONS)
        >> StsJobManagerRunOperator(
            task_id="run_until_done", options=OPTIONS, until_done=True, timeout=120
        )
        >> StsMigrationDoneSensor(
            task_id="wait_until_done",
            options=OPTIONS,
            deferrable=True,
            poke_interval=1,
            timeout=120,
        )
        >> StsRemoveSuccessfulOneTimeJobsOperator(task_id="remove", options=OPTIONS)
        >> StsPauseAllJobsOperator(task_id="pause", options=OPTIONS)
        >> PythonOperator(task_id="record", python_callable=record)
    )
