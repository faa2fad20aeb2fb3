"""sts-doctor against the emulator: every check passes, then each check
failing on its own names what is wrong and the command that fixes it."""

from __future__ import annotations

import pytest

from conftest import Emulator, Migration, tool

PROJECT = "doctor-project"
AGENT = f"serviceAccount:project-{PROJECT}@storage-transfer-service.iam.gserviceaccount.com"


@pytest.fixture
def doctor(migration: Migration, emulator: Emulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STORAGE_TRANSFER_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
    migration.prepare()

    def run(*extra: str):
        return tool(
            "sts-doctor",
            *migration.state_args(),
            "--project",
            PROJECT,
            "--source-bucket",
            migration.source_bucket,
            "--destination-bucket",
            migration.destination_bucket,
            *extra,
            check=False,
        )

    return run


def test_every_check_passes_on_a_ready_project(doctor, emulator: Emulator) -> None:
    result = doctor("--publish-heartbeat")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("All ") and "FAIL" not in result.stdout
    for expected in (
        "API storagetransfer.googleapis.com: enabled",
        "API monitoring.googleapis.com: enabled",
        "API logging.googleapis.com: enabled",
        "STS service agent: project-doctor-project@",
        "agent on gs://migration-source (source)",
        "agent on gs://migration-destination (destination)",
        "you on gs://migration-source",
        "you on the project",
        "reusable jobs",
    ):
        assert any(expected in line for line in lines), (expected, result.stdout)
    # Read-only: nothing was created or changed.
    assert emulator.stats()["methods"].keys() <= {
        "serviceusage.services.get",
        "storagetransfer.googleServiceAccounts.get",
        "storage.buckets.getIamPolicy",
        "storage.buckets.testIamPermissions",
        "cloudresourcemanager.projects.testIamPermissions",
        "storagetransfer.transferJobs.list",
    }


FAILURES = [
    (
        {"disabled_apis": ["storagetransfer.googleapis.com"]},
        "API storagetransfer.googleapis.com",
        "gcloud services enable storagetransfer.googleapis.com --project doctor-project",
    ),
    (
        {"no_service_agent": True},
        "STS service agent",
        "gcloud transfer authorize --add-missing --project doctor-project",
    ),
    (
        {"bucket_roles": {"migration-source": ["roles/storage.objectCreator"]}},
        "agent on gs://migration-source (source)",
        f"add-iam-policy-binding gs://migration-source --member={AGENT}"
        " --role=roles/storage.objectViewer",
    ),
    (
        {"bucket_roles": {"migration-destination": ["roles/storage.objectViewer"]}},
        "agent on gs://migration-destination (destination)",
        "--role=roles/storage.objectAdmin",
    ),
    (
        {"caller_denied": ["storage.objects.list"]},
        "you on gs://migration-source (source)",
        "--role=roles/storage.objectViewer",
    ),
    (
        {"caller_denied": ["storagetransfer.jobs.create"]},
        "you on the project",
        "gcloud projects add-iam-policy-binding doctor-project --member=user:YOU"
        " --role=roles/storagetransfer.user",
    ),
    (
        {"caller_denied": ["logging.logEntries.list"]},
        "you on the project",
        "gcloud projects add-iam-policy-binding doctor-project --member=user:YOU"
        " --role=roles/logging.viewer",
    ),
    (
        {"disabled_apis": ["logging.googleapis.com"]},
        "API logging.googleapis.com",
        "gcloud services enable logging.googleapis.com --project doctor-project",
    ),
]


def test_a_move_needs_the_agent_to_delete_from_the_source(doctor, emulator: Emulator) -> None:
    reader = ["roles/storage.objectViewer", "roles/storage.legacyBucketReader"]
    emulator.set_faults(bucket_roles={"migration-source": reader})
    assert doctor().returncode == 0, "a copy only reads the source"
    result = doctor("--move")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "lacks storage.objects.delete" in result.stdout
    assert f"gs://migration-source --member={AGENT} --role=roles/storage.objectAdmin" in (
        result.stdout
    )


@pytest.mark.parametrize(("faults", "check", "fix"), FAILURES)
def test_each_check_fails_on_its_own_naming_the_fix(
    doctor, emulator: Emulator, faults: dict, check: str, fix: str
) -> None:
    emulator.set_faults(**faults)
    result = doctor()
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failed and all(check in line for line in failed[:1]), result.stdout
    assert fix in result.stdout
    assert result.stdout.splitlines()[-1].endswith("run sts-doctor again.")


def test_a_missing_bucket_is_named(doctor) -> None:
    result = tool(
        "sts-doctor",
        "--project",
        PROJECT,
        "--source-bucket",
        "no-such-bucket",
        "--state",
        "sqlite:/nonexistent/state.db",
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gcloud storage buckets create gs://no-such-bucket" in result.stdout


def test_bad_input_is_exit_2(doctor) -> None:
    result = tool("sts-doctor", "--source-bucket", "Bad Bucket!", check=False)
    assert result.returncode == 2
    assert "not a valid bucket name" in result.stderr


def test_another_migrations_reusable_jobs_on_the_same_buckets_are_named(
    doctor, emulator: Emulator, migration: Migration
) -> None:
    body = {
        "name": "transferJobs/sts-jm-pool-0123456789abcdef-0000",
        "projectId": PROJECT,
        "status": "ENABLED",
        "transferSpec": {
            "gcsDataSource": {"bucketName": migration.source_bucket},
            "gcsDataSink": {"bucketName": migration.destination_bucket},
            "objectConditions": {"includePrefixes": ["elsewhere/"]},
        },
    }
    emulator.call("POST", "/v1/transferJobs", body)
    result = doctor()
    assert result.returncode == 1, result.stdout
    assert "FAIL reusable jobs: 1 reusable jobs of another migration" in result.stdout
    assert "sts-jm-pool-0123456789abcdef-0000" in result.stdout
    assert "no common or overlapping prefix" in result.stdout


def test_a_job_list_whose_page_tokens_cycle_is_a_failed_check(doctor, emulator: Emulator) -> None:
    """transferJobs.list answering none -> A -> B -> A: the doctor's job
    listing stops with the repeated token named, not a loop."""
    emulator.set_faults(cycle_page_tokens=True)
    result = doctor()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "transferJobs.list returned page token 'A' twice" in result.stdout + result.stderr
