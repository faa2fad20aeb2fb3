"""sts-plan and sts-verify through the installed tools, and the emulator's
Cloud Storage JSON API checked with Google's own google-cloud-storage."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import google_crc32c
import pytest
from google.api_core.exceptions import NotFound
from google.cloud import storage

import sts_job_manager as sjm
from conftest import FAST, Emulator, Migration, sql, tool


def write(bucket: Path, name: str, data: bytes) -> None:
    path = bucket / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def content(name: str, size: int) -> bytes:
    return (hashlib.sha256(name.encode()).digest() * (size // 32 + 1))[:size]


def skewed_migration(base: Path) -> Migration:
    """One huge folder, many small ones, objects at the top level, names
    sharing long stems, one name that prefixes a folder's names."""
    migration = Migration(root=base / "buckets", state=base / "state.db", prefixes=[])
    migration.destination.mkdir(parents=True)
    objects: dict[str, int] = {}
    for i in range(120):
        objects[f"huge/part-{i:04d}.bin"] = 4000
    for d in range(40):
        for f in range(2):
            objects[f"small/d{d:02d}/f{f}.txt"] = 100
    objects["README"] = 30
    objects["index.html"] = 50
    objects["smal"] = 5
    for i in range(30):
        objects[f"stems/a-very-long-shared-stem-of-object-names-{i:03d}"] = 6000
    for name, size in objects.items():
        data = content(name, size)
        write(migration.source, name, data)
        migration.objects[name] = data
    return migration


def assert_exact_cover(names: list[str], prefixes: list[str]) -> None:
    for name in names:
        covering = [p for p in prefixes if name.startswith(p)]
        assert len(covering) == 1, f"{name} is covered by {covering}"
    ordered = sorted(prefixes)
    for a, b in zip(ordered, ordered[1:]):
        assert not b.startswith(a), f"{a!r} is a prefix of {b!r}"
    assert all(p and not p.startswith("/") and len(p.encode()) <= 1024 for p in prefixes)


def crc32c_of(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def md5_of(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_google_storage_client_lists_and_gets_from_the_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "buckets"
    objects = {f"a/{i:02d}.bin": content(f"a{i}", 100 + i) for i in range(12)}
    objects |= {f"a/b/{i}.txt": content(f"ab{i}", 10) for i in range(3)}
    objects |= {"top.txt": b"top", "empty": b""}
    for name, data in objects.items():
        write(root / "source-bkt", name, data)
    emulator = Emulator(root)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        client = storage.Client(project="test-project")
        assert client.get_bucket("source-bkt").name == "source-bkt"
        with pytest.raises(NotFound):
            client.get_bucket("no-such-bucket")

        pages = list(client.list_blobs("source-bkt", page_size=4).pages)
        listed = [blob for page in pages for blob in page]
        assert [b.name for b in listed] == sorted(objects)
        assert len(pages) == -(-len(objects) // 4)
        for blob in listed:
            data = objects[blob.name]
            assert blob.size == len(data)
            assert blob.crc32c == crc32c_of(data), blob.name
            assert blob.md5_hash == md5_of(data), blob.name

        level = client.list_blobs("source-bkt", prefix="a/", delimiter="/", page_size=5)
        names = [b.name for b in level]
        assert names == [f"a/{i:02d}.bin" for i in range(12)]
        assert level.prefixes == {"a/b/"}
        top = client.list_blobs("source-bkt", delimiter="/")
        assert [b.name for b in top] == ["empty", "top.txt"]
        assert top.prefixes == {"a/"}

        bucket = client.bucket("source-bkt")
        blob = bucket.get_blob("a/b/1.txt")
        assert blob is not None and blob.size == 10
        assert blob.crc32c == crc32c_of(objects["a/b/1.txt"])
        assert blob.download_as_bytes() == objects["a/b/1.txt"]
        assert bucket.get_blob("a/b/nope") is None
    finally:
        emulator.stop()


def test_plan_prepare_manage_verify_on_a_skewed_bucket(tmp_path: Path) -> None:
    migration = skewed_migration(tmp_path)
    args = migration.backend_args()

    # Without --out or --load nothing is written.
    shown = tool("sts-plan", *args, "--shards", "10")
    assert "Nothing written" in shown.stdout
    assert not migration.state.exists()

    result = tool("sts-plan", *args, "--shards", "10", "--out", str(migration.prefix_file))
    prefixes = json.loads(migration.prefix_file.read_text())
    assert_exact_cover(list(migration.objects), prefixes)
    # The stated tolerance: within half the asked count either way.
    assert 5 <= len(prefixes) <= 15, prefixes
    assert "balance (largest / mean)" in result.stdout
    for prefix in prefixes:
        assert prefix in result.stdout

    migration.prefixes = prefixes
    migration.prepare()
    tool("sts-job-manager", *args, *FAST, "--exit-when-done")
    migration.assert_copied()

    verified = tool("sts-verify", *args)
    assert f"Checked {len(prefixes)} prefixes" in verified.stdout
    rows = sql(migration.state, "SELECT prefix, result, objects_compared FROM sts_job_verification")
    assert {prefix for prefix, _, _ in rows} == set(prefixes)
    assert {result for _, result, _ in rows} == {"verified"}
    assert sum(n for _, _, n in rows) == len(migration.objects)
    frame = sjm.State(state=f"sqlite:{migration.state}").verification()
    assert sorted(frame["prefix"].astype(str)) == sorted(prefixes)
    assert set(frame["result"].astype(str)) == {"verified"}
    assert int(frame["objects_compared"].sum()) == len(migration.objects)
    assert str(frame["checked_at"].dtype) == "datetime64[us, UTC]"
    assert not frame["stale"].any()
    # Nothing transferred since: a second run skips every prefix.
    again = tool("sts-verify", *args)
    assert f"{len(prefixes)} skipped" in again.stdout
    # Changed after a clean verification: --all checks every done prefix
    # whatever was verified before, and catches it.
    changed = next(iter(migration.objects))
    (migration.destination / changed).write_bytes(b"changed after the verification")
    everything = tool("sts-verify", *args, "--all", check=False)
    assert everything.returncode == 4, everything.stdout + everything.stderr
    assert f"Checked {len(prefixes)} prefixes" in everything.stdout
    assert "0 skipped" in everything.stdout
    assert changed in everything.stdout
    # Requeued: its verdict no longer speaks for it, and every view says so.
    tool("sts-verify", *args, "--all", "--requeue", check=False)
    (requeued,) = [p for p in prefixes if changed.startswith(p)]
    frame = sjm.State(state=f"sqlite:{migration.state}").verification()
    stale = dict(zip(frame["prefix"].astype(str), frame["stale"]))
    assert bool(stale.pop(requeued)), "the requeued prefix's verdict is stale"
    assert not any(stale.values()), stale
    # sts-status says the same: the requeued prefix's mismatch no longer counts.
    shown = json.loads(tool("sts-status", *migration.state_args(), "--json").stdout)
    assert shown["verification"] == {
        "verified": len(prefixes) - 1,
        "mismatched": 0,
        "stale": 1,
        "unverified_done": 0,
    }
    text = tool("sts-status", *migration.state_args()).stdout
    assert f"Verified: {len(prefixes) - 1} done prefixes match, 0 mismatched" in text


def test_plan_load_keeps_planned_sizes_and_refuses_overlaps(tmp_path: Path) -> None:
    migration = skewed_migration(tmp_path)
    args = migration.backend_args()
    tool("sts-plan", *args, "--shard-bytes", "100KB", "--load")
    jobs = dict(sql(migration.state, "SELECT prefix, status FROM sts_job"))
    planned = sql(migration.state, "SELECT prefix, objects, bytes FROM sts_job_plan")
    plan = {p: (o, b) for p, o, b in planned}
    assert set(jobs) == set(plan) and set(jobs.values()) == {"waiting"}
    assert_exact_cover(list(migration.objects), list(plan))
    assert sum(o for o, _ in plan.values()) == len(migration.objects)
    assert sum(b for _, b in plan.values()) == sum(map(len, migration.objects.values()))
    frame = sjm.State(state=f"sqlite:{migration.state}").plan()
    assert dict(zip(frame["prefix"].astype(str), frame["bytes"])) == {
        p: b for p, (_, b) in plan.items()
    }
    # sts-status counts the planned sizes as what is left: nothing unlisted.
    status = json.loads(tool("sts-status", *migration.state_args(), "--json").stdout)
    assert status["unlisted_prefixes"] == 0, status
    assert status["prefixes"]["waiting"] == len(plan)

    # A plan whose prefixes overlap those already loaded is refused whole.
    refused = tool("sts-plan", *args, "--shards", "2", "--load", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "overlaps" in refused.stderr and "Traceback" not in refused.stderr
    bad = tool("sts-plan", *args, "--shards", "0", check=False)
    assert bad.returncode == 2 and "--shards" in bad.stderr
    missing = tool("sts-plan", *args, "--source-bucket", "no-such-bucket", check=False)
    assert missing.returncode == 1 and "no-such-bucket" in missing.stderr


def test_verify_names_changed_and_deleted_objects_and_requeue_repairs(tmp_path: Path) -> None:
    migration = skewed_migration(tmp_path)
    args = migration.backend_args()
    tool("sts-plan", *args, "--shards", "8", "--out", str(migration.prefix_file))
    migration.prefixes = json.loads(migration.prefix_file.read_text())
    migration.prepare()
    tool("sts-job-manager", *args, *FAST, "--exit-when-done")

    changed, deleted = "huge/part-0007.bin", "stems/a-very-long-shared-stem-of-object-names-004"
    original = (migration.destination / changed).read_bytes()
    (migration.destination / changed).write_bytes(bytes(b ^ 0xFF for b in original))
    (migration.destination / deleted).unlink()

    failed = tool("sts-verify", *args, check=False)
    assert failed.returncode == 4, failed.stdout + failed.stderr
    assert changed in failed.stdout and "crc32c" in failed.stdout
    assert deleted in failed.stdout and "missing" in failed.stdout
    mismatched = sql(
        migration.state,
        "SELECT prefix, missing, different, offending_objects FROM sts_job_verification"
        " WHERE result = 'mismatch'",
    )
    offending = {name for *_, names in mismatched for name in json.loads(names)}
    assert offending == {changed, deleted}
    assert sum(m for _, m, _, _ in mismatched) == 1 and sum(d for _, _, d, _ in mismatched) == 1

    # A prefix of no row (a typo) is refused, nothing checked.
    unknown = mismatched[0][0] + "-typo/"
    typo = tool("sts-verify", *args, "--prefix", unknown, check=False)
    assert typo.returncode == 2, typo.stdout + typo.stderr
    assert f"'{unknown}' is not in job table 'sts_job'" in typo.stderr
    checked = sql(migration.state, "SELECT COUNT(*) FROM sts_job_verification")
    assert checked[0][0] == len(sql(migration.state, "SELECT prefix FROM sts_job"))

    requeued = tool("sts-verify", *args, "--requeue", check=False)
    assert requeued.returncode == 4
    assert "Requeued" in requeued.stdout
    jobs = migration.jobs()
    assert {jobs[p][0] for p, *_ in mismatched} == {"waiting"}

    tool("sts-job-manager", *args, *FAST, "--exit-when-done")
    assert {status for status, _ in migration.jobs().values()} == {"done"}
    assert (migration.destination / changed).read_bytes() == original
    repaired = tool("sts-verify", *args)
    assert "0 mismatched" in repaired.stdout
    # Only the requeued prefixes were checked again.
    assert f"Checked {len(mismatched)} prefixes" in repaired.stdout


def test_plan_over_the_cloud_storage_api_matches_the_local_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migration = skewed_migration(tmp_path)
    local = tool("sts-plan", *migration.backend_args(), "--shards", "10")
    emulator = Emulator(migration.root)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        remote = tool(
            "sts-plan",
            "--state",
            f"sqlite:{migration.state}",
            "--transfer",
            "sts",
            "--project",
            "test-project",
            "--shards",
            "10",
        )
    finally:
        emulator.stop()
    assert remote.stdout == local.stdout


class _EndlessPages(http.server.BaseHTTPRequestHandler):
    """A Cloud Storage whose object pages cycle (no token -> A, A -> B,
    B -> A), and every bucket exists."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0]
        if path.endswith("/o"):
            after = "B" if "pageToken=A" in self.path else "A"
            body = {"kind": "storage#objects", "items": [], "nextPageToken": after}
        else:
            body = {"kind": "storage#bucket", "name": path.rsplit("/", 1)[-1]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("tool_name", ["sts-plan", "sts-verify"])
def test_a_list_that_repeats_its_page_token_ends_in_an_error(
    migration: Migration, monkeypatch: pytest.MonkeyPatch, tool_name: str
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessPages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"127.0.0.1:{server.server_address[1]}")
        migration.prepare()
        if tool_name == "sts-verify":
            sql(migration.state, "UPDATE sts_job SET status = 'done'")
        args = [*migration.state_args(), "--transfer", "sts", "--project", "endless-project"]
        result = tool(tool_name, *args, check=False, timeout=90)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "repeated page token 'A'" in result.stderr
    finally:
        server.shutdown()
        server.server_close()


class _NeverAnswers(http.server.BaseHTTPRequestHandler):
    """A Cloud Storage that accepts every request and never answers it."""

    asked = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).asked.set()
        time.sleep(120)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("tool_name", ["sts-plan", "sts-verify"])
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_tool_in_the_middle_of_a_listing(
    migration: Migration, monkeypatch: pytest.MonkeyPatch, tool_name: str, signal_name: str
) -> None:
    import signal
    import subprocess

    from conftest import BIN

    handler = type("NeverAnswers", (_NeverAnswers,), {"asked": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"127.0.0.1:{server.server_address[1]}")
        migration.prepare()
        sql(migration.state, "UPDATE sts_job SET status = 'done'")
        before = sql(migration.state, "SELECT * FROM sts_job ORDER BY prefix")
        args = [*migration.state_args(), "--transfer", "sts", "--project", "stopped-project"]
        process = subprocess.Popen(
            [str(BIN / tool_name), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # Wait until it is inside the listing (the server has the request).
        deadline = time.monotonic() + 30
        while not handler.asked.wait(0.05):
            assert time.monotonic() < deadline and process.poll() is None, process.stderr
        process.send_signal(getattr(signal, signal_name))
        # A hang ends the test at this timeout.
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 130, stderr
        assert "stopped by a signal" in stderr
        assert sql(migration.state, "SELECT * FROM sts_job ORDER BY prefix") == before
    finally:
        server.shutdown()
        server.server_close()


def test_plan_keeps_its_promise_on_one_flat_folder_of_200000_objects(tmp_path: Path) -> None:
    """`--shards 50` over one folder of uniform names: within half of 50."""
    root = tmp_path / "buckets"
    folder = root / "flat-source" / "flat"
    folder.mkdir(parents=True)
    for i in range(200_000):
        (folder / f"file-{i:06d}.bin").touch()
    (root / "migration-destination").mkdir()
    result = tool(
        "sts-plan",
        "--transfer",
        f"local:{root}",
        "--source-bucket",
        "flat-source",
        "--shards",
        "50",
        "--out",
        str(tmp_path / "prefixes.json"),
        timeout=300,
    )
    prefixes = json.loads((tmp_path / "prefixes.json").read_text())
    assert 25 <= len(prefixes) <= 75, (len(prefixes), result.stdout[-500:])
    assert all(p.startswith("flat/file-") for p in prefixes)
