"""A migration run by a real scheduler (LocalExecutor): credentials from a
Google Cloud connection, the run-until-done operator deferred to the
triggerer. The test writes ``provider.json`` beside this file."""

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
    StsPrepareTablesOperator,
)

CONFIG_FILE = Path(__file__).with_name("provider.json")
CONFIG = json.loads(CONFIG_FILE.read_text()) if CONFIG_FILE.exists() else {}
OPTIONS = CONFIG.get("options", {})
CONN = CONFIG.get("conn_id", "google_cloud_default")
TASKS = ["prepare_tables", "run_until_done", "wait_until_done"]


def record(ti: Any, **_: Any) -> None:
    xcoms = {task: ti.xcom_pull(task_ids=task) for task in TASKS}
    Path(CONFIG["record"]).write_text(json.dumps(xcoms))


with DAG("sts_provider", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    (
        StsPrepareTablesOperator(
            task_id="prepare_tables",
            options=OPTIONS,
            gcp_conn_id=CONN,
            job_prefix_source_file=CONFIG.get("prefix_file"),
        )
        >> StsJobManagerRunOperator(
            task_id="run_until_done",
            options=OPTIONS,
            gcp_conn_id=CONN,
            until_done=True,
            deferrable=True,
            timeout=300,
        )
        >> StsMigrationDoneSensor(
            task_id="wait_until_done",
            options=OPTIONS,
            gcp_conn_id=CONN,
            deferrable=True,
            poke_interval=1,
            timeout=120,
        )
        >> PythonOperator(task_id="record", python_callable=record)
    )
