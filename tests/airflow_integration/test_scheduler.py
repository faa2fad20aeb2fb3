"""The provider in a real Airflow: a scheduler with the LocalExecutor (tasks
in processes it forks after importing sts_job_manager), the DAG processor,
the triggerer and the API server on 127.0.0.1 (the log servers, which would
listen on every interface, are skipped: the logs are local files). The migration
goes over STS REST to sts-emulator with a service account key taken from an
Airflow connection: the emulator sees every request signed by it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import Emulator, make_migration

DAGS = Path(__file__).resolve().parent / "dags"
BIN = Path(sys.executable).parent
PROJECT = "airflow-project"
SERVICE_ACCOUNT = "airflow-migrator@airflow-project.iam.gserviceaccount.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_account_key(tmp_path: Path) -> dict[str, str]:
    pem = tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        + ["-out", str(pem)],
        check=True,
        capture_output=True,
    )
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "airflow-key",
        "private_key": pem.read_text(),
        "client_email": SERVICE_ACCOUNT,
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def test_scheduler_with_local_executor_runs_the_migration_dag(tmp_path: Path) -> None:
    migration = make_migration(tmp_path / "migration", prefixes=4, files_per_prefix=2)
    migration.prefix_file.write_text(json.dumps(migration.prefixes))
    emulator = Emulator(migration.root)
    # Slow enough that the first cycle cannot finish (the operator defers)
    # and the trigger outlives a scheduler loop: a trigger that fires before
    # the scheduler has seen the task's deferral makes Airflow 3.3 fail the
    # task ("finished with state success, but ... queued").
    emulator.set_faults(bytes_per_second=500)
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(DAGS / "sts_provider.py", home / "dags")
    record = tmp_path / "xcoms.json"
    options = {
        "state": f"sqlite:{migration.state}",
        "transfer": "sts",  # the project comes from the connection
        "sleep_timeout": 0.5,
        "job_interval": 0.5,
        "metrics_interval": 0.5,
    }
    (home / "dags" / "provider.json").write_text(
        json.dumps(
            {
                "options": options,
                "conn_id": "sts_gcp",
                "prefix_file": str(migration.prefix_file),
                "record": str(record),
            }
        )
    )
    connection = {
        "conn_type": "google_cloud_platform",
        "extra": {"keyfile_dict": service_account_key(tmp_path), "project": PROJECT},
    }
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_STS_GCP": json.dumps(connection),
        "STORAGE_TRANSFER_EMULATOR_HOST": emulator.host,
        "LOGLEVEL": "WARNING",
    }

    def airflow(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"airflow {args}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    airflow("db", "migrate")
    log = (tmp_path / "airflow.log").open("w")
    components = [
        ["api-server", "--host", "127.0.0.1", "--port", str(port)],
        ["scheduler", "--skip-serve-logs"],
        ["dag-processor"],
        ["triggerer", "--skip-serve-logs"],
    ]
    running = [
        subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for args in components
    ]

    def tail() -> str:
        return (tmp_path / "airflow.log").read_text()[-5000:]

    try:
        deadline = time.monotonic() + 300
        while "sts_provider" not in airflow("dags", "list", "-o", "json"):
            assert all(p.poll() is None for p in running), tail()
            assert time.monotonic() < deadline, "the DAG was never parsed"
            time.sleep(3)
        airflow("dags", "trigger", "sts_provider")
        state = ""
        while state not in ("success", "failed"):
            assert time.monotonic() < deadline, f"DAG run still {state!r}"
            time.sleep(3)
            out = airflow("dags", "list-runs", "sts_provider", "-o", "json")
            # Warnings may come first on stdout: the JSON is the last line.
            lines = [line for line in out.splitlines() if line.startswith("[")]
            runs = json.loads(lines[-1]) if lines else []
            state = runs[0]["state"] if runs else ""
        assert state == "success", tail()
    finally:
        for process in running:
            os.killpg(process.pid, signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
        with urllib.request.urlopen(f"{emulator.url}/_emulator/stats", timeout=10) as response:
            stats = json.loads(response.read())
        emulator.stop()

    migration.assert_copied()
    assert {status for status, _ in migration.jobs().values()} == {"done"}
    xcoms = json.loads(record.read_text())
    assert xcoms["prepare_tables"] == {"loaded": 4, "already_present": 0}
    assert xcoms["run_until_done"]["done"] is True
    assert xcoms["wait_until_done"]["done"] == 4
    # Every STS request carried the connection's service account's token.
    assert set(stats["callers"]) == {SERVICE_ACCOUNT}, stats
    # The run-until-done operator deferred, and the triggerer ran the cycles.
    task_logs = home / "logs" / "dag_id=sts_provider"
    worker = "".join(p.read_text() for p in task_logs.rglob("task_id=run_until_done/*.log"))
    assert "Pausing task as DEFERRED" in worker
    triggerer = "".join(
        p.read_text() for p in task_logs.rglob("task_id=run_until_done/*.trigger.*")
    )
    assert "StsJobManagerRunTrigger" in triggerer and "prefixes per status" in triggerer
