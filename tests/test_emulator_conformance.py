"""Google's own Python clients against sts-emulator: the GAPIC REST client
(enums as numbers, camelCase) and the discovery client (enums as names)."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage_transfer
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from conftest import Emulator, Migration

PROJECT = "conformance-project"


def spec(prefix: str) -> dict:
    return {
        "gcs_data_source": {"bucket_name": "migration-source"},
        "gcs_data_sink": {"bucket_name": "migration-destination"},
        "object_conditions": {"include_prefixes": [prefix]},
    }


def today() -> dict:
    now = datetime.datetime.now(datetime.timezone.utc).date()
    return {"year": now.year, "month": now.month, "day": now.day}


@pytest.fixture
def gapic(emulator: Emulator) -> Iterator[storage_transfer.StorageTransferServiceClient]:
    client = storage_transfer.StorageTransferServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    )
    yield client
    client.transport.close()


def wait_done(gapic: storage_transfer.StorageTransferServiceClient, name: str) -> None:
    for _ in range(200):
        if gapic.get_operation({"name": name}).done:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} never finished")


def test_gapic_rest_client_every_method(
    gapic: storage_transfer.StorageTransferServiceClient, migration: Migration
) -> None:
    job = gapic.create_transfer_job(
        {
            "transfer_job": {
                "name": "transferJobs/sts-jm-conformance",
                "project_id": PROJECT,
                "transfer_spec": spec("data/p00/"),
                "schedule": {"schedule_start_date": today(), "schedule_end_date": today()},
                "status": storage_transfer.TransferJob.Status.ENABLED,
            }
        }
    )
    assert job.name == "transferJobs/sts-jm-conformance"
    assert job.status == storage_transfer.TransferJob.Status.ENABLED

    with pytest.raises(api_exceptions.Conflict):
        gapic.create_transfer_job(
            {"transfer_job": {"name": job.name, "project_id": PROJECT, "status": 1}}
        )
    unnamed = gapic.create_transfer_job(
        {"transfer_job": {"project_id": PROJECT, "transfer_spec": spec("data/p01/"), "status": 2}}
    )
    assert unnamed.name.startswith("transferJobs/") and unnamed.name != job.name

    got = gapic.get_transfer_job({"job_name": job.name, "project_id": PROJECT})
    assert list(got.transfer_spec.object_conditions.include_prefixes) == ["data/p00/"]

    listed = gapic.list_transfer_jobs(
        {"filter": json.dumps({"projectId": PROJECT, "jobNames": [job.name]}), "page_size": 1}
    )
    assert [j.name for j in listed] == [job.name]
    all_jobs = gapic.list_transfer_jobs(
        {"filter": json.dumps({"project_id": PROJECT}), "page_size": 1}
    )
    assert {j.name for j in all_jobs} == {job.name, unnamed.name}, "paging by one"

    ops = gapic.list_operations(
        {
            "name": "transferOperations",
            "filter": json.dumps({"projectId": PROJECT, "jobNames": [job.name]}),
        }
    ).operations
    assert len(ops) == 1
    wait_done(gapic, ops[0].name)
    done = gapic.get_operation({"name": ops[0].name})
    metadata = storage_transfer.TransferOperation.deserialize(done.metadata.value)
    assert metadata.status == storage_transfer.TransferOperation.Status.SUCCESS
    assert metadata.counters.objects_copied_to_sink == 5
    assert metadata.transfer_job_name == job.name

    # run -> a long-running operation; pause, resume and cancel it.
    migration.set_faults(bytes_per_second=100)
    running = gapic.run_transfer_job({"job_name": job.name, "project_id": PROJECT})
    name = running.operation.name
    assert name.startswith("transferOperations/") and name != ops[0].name
    gapic.pause_transfer_operation({"name": name})
    paused = storage_transfer.TransferOperation.deserialize(
        gapic.get_operation({"name": name}).metadata.value
    )
    assert paused.status == storage_transfer.TransferOperation.Status.PAUSED
    gapic.resume_transfer_operation({"name": name})
    gapic.cancel_operation({"name": name})
    cancelled = gapic.get_operation({"name": name})
    assert cancelled.done
    assert storage_transfer.TransferOperation.deserialize(cancelled.metadata.value).status == (
        storage_transfer.TransferOperation.Status.ABORTED
    )
    filtered = gapic.list_operations(
        {
            "name": "transferOperations",
            "filter": json.dumps({"projectId": PROJECT, "transferStatuses": ["aborted"]}),
        }
    )
    assert [op.name for op in filtered.operations] == [name]

    gapic.update_transfer_job(
        {
            "job_name": job.name,
            "project_id": PROJECT,
            "transfer_job": {"status": storage_transfer.TransferJob.Status.DELETED},
            "update_transfer_job_field_mask": {"paths": ["status"]},
        }
    )
    deleted = gapic.list_transfer_jobs(
        {"filter": json.dumps({"projectId": PROJECT, "jobStatuses": ["DELETED"]})}
    )
    assert [j.name for j in deleted] == [job.name]
    gapic.delete_transfer_job({"job_name": unnamed.name, "project_id": PROJECT})
    assert gapic.get_transfer_job({"job_name": unnamed.name, "project_id": PROJECT}).status == (
        storage_transfer.TransferJob.Status.DELETED
    )
    with pytest.raises(api_exceptions.NotFound):
        gapic.get_transfer_job({"job_name": "transferJobs/missing", "project_id": PROJECT})
    account = gapic.get_google_service_account({"project_id": PROJECT})
    assert account.account_email.endswith("@storage-transfer-service.iam.gserviceaccount.com")


def test_discovery_client_every_method(emulator: Emulator) -> None:
    with discovery.build(
        "storagetransfer",
        "v1",
        static_discovery=True,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    ) as service:
        body = {
            "name": "transferJobs/sts-jm-discovery",
            "projectId": PROJECT,
            "transferSpec": {
                "gcsDataSource": {"bucketName": "migration-source"},
                "gcsDataSink": {"bucketName": "migration-destination"},
                "objectConditions": {"includePrefixes": ["data/p02/"]},
            },
            "schedule": {"scheduleStartDate": today(), "scheduleEndDate": today()},
            "status": "ENABLED",
        }
        created = service.transferJobs().create(body=body).execute()
        assert created["status"] == "ENABLED"
        with pytest.raises(HttpError) as conflict:
            service.transferJobs().create(body=body).execute()
        assert conflict.value.resp.status == 409
        assert json.loads(conflict.value.content)["error"]["status"] == "ALREADY_EXISTS"

        got = service.transferJobs().get(jobName=created["name"], projectId=PROJECT).execute()
        assert got["transferSpec"]["objectConditions"]["includePrefixes"] == ["data/p02/"]
        listed = service.transferJobs().list(filter=json.dumps({"projectId": PROJECT})).execute()
        assert [j["name"] for j in listed["transferJobs"]] == [created["name"]]
        empty = service.transferJobs().list(filter=json.dumps({"projectId": "nobody"})).execute()
        assert empty["transferJobs"] == []

        ops = (
            service.transferOperations()
            .list(name="transferOperations", filter=json.dumps({"projectId": PROJECT}))
            .execute()["operations"]
        )
        assert len(ops) == 1
        assert ops[0]["metadata"]["@type"] == (
            "type.googleapis.com/google.storagetransfer.v1.TransferOperation"
        )
        name = ops[0]["name"]
        for _ in range(200):
            op = service.transferOperations().get(name=name).execute()
            if op.get("done"):
                break
            time.sleep(0.05)
        assert op["metadata"]["status"] == "SUCCESS"
        assert op["metadata"]["counters"]["objectsCopiedToSink"] == "5"

        run = (
            service.transferJobs()
            .run(jobName=created["name"], body={"projectId": PROJECT})
            .execute()
        )
        assert run["name"].startswith("transferOperations/")
        for verb in ("pause", "resume", "cancel"):
            try:
                getattr(service.transferOperations(), verb)(name=run["name"], body={}).execute()
            except HttpError as error:  # the tiny copy may finish first
                assert error.resp.status == 400, error
        emulator.expected_violations += 1  # on purpose: projectId is required
        with pytest.raises(HttpError) as missing_filter:
            service.transferJobs().list(filter=json.dumps({})).execute()
        assert missing_filter.value.resp.status == 400
        service.transferJobs().patch(
            jobName=created["name"],
            body={
                "projectId": PROJECT,
                "transferJob": {"status": "DELETED"},
                "updateTransferJobFieldMask": "status",
            },
        ).execute()
        deleted = (
            service.transferJobs()
            .list(filter=json.dumps({"project_id": PROJECT, "job_statuses": ["deleted"]}))
            .execute()
        )
        assert [j["name"] for j in deleted["transferJobs"]] == [created["name"]]


def strict_answer(emulator: Emulator, method: str, path: str, body: object = None) -> int:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{emulator.url}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_strict_mode_refuses_each_class_of_bad_request_and_admits_good_ones(
    migration: Migration,
) -> None:
    """Over HTTP, as a client meets it: one bad request of each class the
    discovery documents rule out is answered 400 and counted; good ones pass."""
    from urllib.parse import quote

    emulator = Emulator(migration.root, expect_violations=True)
    try:

        def listing(filter_: dict, extra: str = "") -> str:
            return f"/v1/transferOperations?filter={quote(json.dumps(filter_))}{extra}"

        good = {"projectId": PROJECT, "transferStatuses": ["IN_PROGRESS"]}
        assert strict_answer(emulator, "GET", listing(good, "&pageSize=256")) == 200
        assert (
            strict_answer(emulator, "GET", "/storage/v1/b/migration-source/o?maxResults=10") == 200
        )
        bad = [
            ("GET", "/v1/transferThings", None),  # unknown method or path
            ("GET", listing({"projectId": PROJECT}, "&bogus=1"), None),  # unknown parameter
            ("GET", listing({"projectId": PROJECT}, "&pageSize=257"), None),  # described max
            ("GET", listing({"projectId": PROJECT, "transferStatuses": ["QUEUED"]}), None),
            ("GET", listing({"projectId": PROJECT, "bucket": "x"}), None),  # filter key
            ("GET", listing({"jobNames": ["transferJobs/a"]}), None),  # required key
            ("POST", "/v1/transferJobs", {"projectId": PROJECT, "colour": "red"}),  # unknown field
            ("POST", "/v1/transferJobs", {"projectId": 7}),  # wrong JSON type
            ("POST", "/v1/transferJobs", {"projectId": PROJECT, "status": "RUNNING"}),  # enum
            ("POST", "/v1/transferJobs", {"description": "x" * 1025}),  # described limit
            ("POST", "/v1/transferJobs/a:run", {}),  # required field
            ("POST", "/v1/transferJobs/a:pause", {}),  # path pattern
            ("GET", "/storage/v1/b/migration-source/o?maxResults=many", None),
        ]
        for method, path, body in bad:
            assert strict_answer(emulator, method, path, body) == 400, path
        strict = emulator.stats()["strict"]
        assert strict["violation_count"] == len(bad)
        assert strict["checked"] == len(bad) + 2
    finally:
        emulator.stop()
