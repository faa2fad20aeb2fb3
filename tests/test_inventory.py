"""sts-plan and sts-verify from object inventories held in BigQuery
(bqemulator, synthetic inventory tables with Cloud Storage's inventory
report columns): the same plan and the same verdicts as listing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_bigquery import (  # noqa: F401
    PROJECT,
    BigQuery,
    bigquery,
    bq_args,
    bq_state_args,
    dataset,
)
from test_plan_verify import crc32c_of, md5_of, skewed_migration

from conftest import Migration, tool


def sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load_inventory(bq: BigQuery, table: str, bucket: str, root: Path) -> None:
    """An inventory table of the objects in `root` (a bucket directory)."""
    bq.query(
        f"CREATE TABLE `{PROJECT}.{table}` (bucket STRING, name STRING, size INT64,"
        " crc32c STRING, md5Hash STRING, updated TIMESTAMP)"
    )
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        name = path.relative_to(root).as_posix()
        rows.append(
            f"({sql_string(bucket)}, {sql_string(name)}, {len(data)},"
            f" {sql_string(crc32c_of(data))}, {sql_string(md5_of(data))},"
            " TIMESTAMP '2026-01-01 00:00:00+00')"
        )
    # Another bucket's rows in the same table must not count.
    rows.append("('some-other-bucket', 'huge/part-0001.bin', 1, 'AAAAAA==', NULL, NULL)")
    for start in range(0, len(rows), 100):
        bq.query(
            f"INSERT INTO `{PROJECT}.{table}` (bucket, name, size, crc32c, md5Hash, updated)"
            f" VALUES {', '.join(rows[start : start + 100])}"
        )


def verdicts(bq: BigQuery, name: str) -> dict[str, tuple]:
    rows = bq.query(
        "SELECT prefix, result, objects_compared, missing, different, offending_objects"
        f" FROM `{PROJECT}.{name}.sts_job_verification`"
    )
    return {
        r["prefix"]: (
            r["result"],
            int(r["objects_compared"]),
            int(r["missing"]),
            int(r["different"]),
            sorted(json.loads(r["offending_objects"])),
        )
        for r in rows
    }


def test_inventories_plan_and_verify_as_listing_does(
    bigquery: BigQuery,  # noqa: F811
    dataset: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    migration: Migration = skewed_migration(tmp_path)
    args = bq_args(migration, dataset)
    bigquery.query(f"CREATE SCHEMA `{PROJECT}.{dataset}`")
    load_inventory(bigquery, f"{dataset}.source_inventory", "migration-source", migration.source)

    listed_plan, inventory_plan = tmp_path / "listed.json", tmp_path / "inventory.json"
    tool("sts-plan", *args, "--shards", "10", "--out", str(listed_plan))
    by_sql = tool(
        "sts-plan",
        *args,
        "--shards",
        "10",
        "--source-inventory",
        f"{dataset}.source_inventory",
        "--out",
        str(inventory_plan),
    )
    prefixes = json.loads(listed_plan.read_text())
    assert json.loads(inventory_plan.read_text()) == prefixes, by_sql.stdout

    # A copy with one object changed (same size) and one deleted.
    shutil.rmtree(migration.destination)
    shutil.copytree(migration.source, migration.destination)
    changed, deleted = "huge/part-0007.bin", "small/d03/f1.txt"
    data = (migration.destination / changed).read_bytes()
    (migration.destination / changed).write_bytes(bytes(b ^ 1 for b in data))
    (migration.destination / deleted).unlink()
    load_inventory(
        bigquery, f"{dataset}.destination_inventory", "migration-destination", migration.destination
    )
    migration.prefix_file.write_text(json.dumps(prefixes))
    tool(
        "sts-prepare-tables",
        *bq_state_args(dataset),
        "--job-prefix-source-file",
        str(migration.prefix_file),
    )
    named = [arg for prefix in prefixes for arg in ("--prefix", prefix)]

    listing = tool("sts-verify", *args, *named, check=False)
    assert listing.returncode == 4, listing.stdout + listing.stderr
    by_listing = verdicts(bigquery, dataset)

    inventory = tool(
        "sts-verify",
        *args,
        *named,
        "--source-inventory",
        f"{dataset}.source_inventory",
        "--destination-inventory",
        f"{PROJECT}.{dataset}.destination_inventory",
        check=False,
    )
    assert inventory.returncode == 4, inventory.stdout + inventory.stderr
    assert changed in inventory.stdout and deleted in inventory.stdout
    by_inventory = verdicts(bigquery, dataset)
    assert by_inventory == by_listing
    mismatched = {p: v for p, v in by_listing.items() if v[0] == "mismatch"}
    assert sorted(name for v in mismatched.values() for name in v[4]) == sorted([changed, deleted])
    assert sum(v[1] for v in by_listing.values()) == len(migration.objects)

    half = tool("sts-verify", *args, "--source-inventory", "x.y", check=False)
    assert half.returncode == 2 and "both" in half.stderr
