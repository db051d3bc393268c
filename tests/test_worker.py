"""The worker: runs real kernels from task messages; exit codes, reports, SIGTERM, S3 staging (moto_server)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT
from gf_daemons import free_port, s3_endpoint  # noqa: F401  (fixture)
from worker import storage
from worker.message import TaskMessage


def random_fasta(path, contigs=(("a", 200_000), ("b", 100_000)), seed=1):
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        for name, n in contigs:
            seq = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, n)]
            rows = -(-n // 80)
            padded = np.full(rows * 81, ord("\n"), np.uint8)
            body = padded.reshape(rows, 81)
            flat = np.zeros(rows * 80, np.uint8)
            flat[:n] = seq
            body[:, :80] = flat.reshape(rows, 80)
            data = body.tobytes()
            if n % 80:
                data = data[:len(data) - 81 + n % 80] + b"\n"
            f.write(f">{name}\n".encode() + data)
    return path


def message(tmp_path, inputs, out, stage="index", attempt=1, task=7):
    m = TaskMessage(task=task, attempt=attempt, run=1, stage=stage, key=stage, inputs=inputs,
                    outputs={"out": out}, report=str(tmp_path / f"report-{task}-{attempt}"),
                    resources={"cpus": 1, "ranks": 1})
    p = tmp_path / f"msg-{task}-{attempt}.json"
    p.write_text(m.to_json())
    return str(p), m


def run_worker(msg_path, env=None, **kw):
    e = dict(os.environ, GENEFARM_HEARTBEAT_SECONDS="0.2", **(env or {}))
    e["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, "-m", "worker", "run", msg_path], capture_output=True, text=True,
                          env=e, timeout=300, **kw)


def report(m):
    with open(os.path.join(m.report, "report.json")) as f:
        return json.load(f)


def test_a_task_runs_its_kernel_and_delivers_whole(tmp_path):
    ref = random_fasta(str(tmp_path / "ref.fa"))
    out = str(tmp_path / "work" / "idx")
    p, m = message(tmp_path, {"reference": ref}, out)
    r = run_worker(p)
    assert r.returncode == 0, r.stderr
    rep = report(m)
    assert rep["outcome"] == "done" and rep["exit_code"] == 0 and rep["outputs"] == {"out": out}
    assert rep["result"]["total_length"] == 300_000                     # the kernel's own JSON summary
    assert rep["cpu_seconds"] > 0 and rep["peak_mb"] > 0
    assert os.path.exists(os.path.join(out, "ref.gfi.json")) and os.path.exists(os.path.join(out, "_genefarm.json"))
    assert not [x for x in os.listdir(tmp_path / "work") if "partial" in x]
    hb = json.load(open(os.path.join(m.report, "heartbeat.json")))
    assert hb["task"] == 7 and hb["attempt"] == 1
    # a second delivery of the same (task, attempt) does nothing and keeps the first report
    before = os.path.getmtime(os.path.join(m.report, "report.json"))
    r = run_worker(p)
    assert r.returncode == 0 and "already reported" in r.stderr
    assert os.path.getmtime(os.path.join(m.report, "report.json")) == before


def test_bad_input_exits_2_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.fa"
    bad.write_text("this is not fasta\n")
    out = str(tmp_path / "work" / "idx")
    p, m = message(tmp_path, {"reference": str(bad)}, out)
    r = run_worker(p)
    assert r.returncode == 2
    rep = report(m)
    assert rep["outcome"] == "bad_input" and "kernels.index exited 2" in rep["message"]
    assert not os.path.exists(tmp_path / "work") or not os.listdir(tmp_path / "work")
    p, m = message(tmp_path, {"reference": str(tmp_path / "missing.fa")}, out, task=8)
    r = run_worker(p)
    assert r.returncode == 2 and "does not exist" in report(m)["message"]


def test_a_message_the_worker_cannot_read_is_bad_input(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"version": 99}))
    r = run_worker(str(p))
    assert r.returncode == 2 and "version" in r.stderr


@pytest.mark.slow
def test_sigterm_is_a_clean_preemption(tmp_path):
    # a reference big enough that indexing it takes several seconds
    ref = random_fasta(str(tmp_path / "big.fa"), (("a", 40_000_000),), seed=3)
    out = str(tmp_path / "work" / "idx")
    p, m = message(tmp_path, {"reference": ref}, out)
    e = dict(os.environ, GENEFARM_HEARTBEAT_SECONDS="0.2", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "worker", "run", p], env=e, stderr=subprocess.PIPE, text=True)
    hb = os.path.join(m.report, "heartbeat.json")
    t0 = time.time()
    while time.time() - t0 < 60:
        if os.path.exists(hb) and json.load(open(hb)).get("phase") == "running":
            break
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    err = proc.stderr.read()
    assert rc == 143, err
    rep = report(m)
    assert rep["outcome"] == "preempted" and rep["exit_code"] == 143
    assert not os.path.exists(out)
    assert not [x for x in os.listdir(tmp_path / "work") if "partial" in x]


# ---------------------------------------------------------------- S3 against moto_server
@pytest.fixture
def bucket(s3_endpoint):  # noqa: F811
    import boto3
    c = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"gf-{os.getpid()}-{time.time_ns() % 10 ** 9}"
    c.create_bucket(Bucket=name)
    storage._stores.clear()
    return c, name


def test_s3_staging_in_and_out(tmp_path, bucket, tiny):
    c, b = bucket
    c.upload_file(tiny["ref"], b, "refs/chr20sim.fa.gz")
    uri = f"s3://{b}/refs/chr20sim.fa.gz"
    assert storage.stat(uri)["size"] == os.path.getsize(tiny["ref"])
    out = f"s3://{b}/work/index-1"
    p, m = message(tmp_path, {"reference": uri}, out)
    r = run_worker(p)
    assert r.returncode == 0, r.stderr
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=b, Prefix="work/index-1/")["Contents"])
    assert "work/index-1/ref.gfi.json" in keys and "work/index-1/_genefarm.json" in keys
    # and back: a directory prefix fetched whole
    d = storage.fetch(out, str(tmp_path / "scratch"), "idx")
    assert sorted(os.listdir(d)) == sorted(k.split("/")[-1] for k in keys)


def test_s3_missing_objects_and_buckets_are_bad_input(tmp_path, bucket):
    c, b = bucket
    with pytest.raises(storage.StorageError) as e:
        storage.stat(f"s3://{b}/no/such.fq.gz")
    assert e.value.kind == "missing"
    with pytest.raises(storage.StorageError) as e:
        storage.stat(f"s3://gf-no-such-bucket-{os.getpid()}/x")
    assert e.value.kind == "missing"
    p, m = message(tmp_path, {"reference": f"s3://{b}/nothing.fa"}, str(tmp_path / "o"))
    r = run_worker(p)
    assert r.returncode == 2 and report(m)["outcome"] == "bad_input"


def test_s3_multipart_goes_through_the_managed_transfer(tmp_path, bucket, monkeypatch):
    c, b = bucket
    monkeypatch.setattr(storage, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    storage._stores.clear()
    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, 12 * 1024 * 1024, dtype=np.uint8).tobytes())
    storage.put(str(big), f"s3://{b}/big.bin")
    etag = c.head_object(Bucket=b, Key="big.bin")["ETag"].strip('"')
    assert etag.endswith("-3")                      # 3 parts of 5 MB: a multipart upload
    got = storage.fetch(f"s3://{b}/big.bin", str(tmp_path / "dl"))
    assert open(got, "rb").read() == big.read_bytes()
    storage._stores.clear()


def test_s3_unreachable_is_temporary(tmp_path, s3_endpoint):  # noqa: F811
    port = free_port()                                  # nothing listens there
    p, m = message(tmp_path, {"reference": "s3://b/ref.fa"}, str(tmp_path / "o"))
    r = run_worker(p, env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"})
    assert r.returncode == 75, r.stderr
    assert report(m)["outcome"] == "temporary"


def test_oss_shares_the_object_store_path(tmp_path, bucket, s3_endpoint, monkeypatch):  # noqa: F811
    """oss:// through oss2, against moto_server (no OSS server exists here; moto answers oss2's
    simple object calls, without checking signatures, and cannot list): put, stat, get."""
    c, b = bucket
    monkeypatch.setenv("OSS_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "gf-test")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", os.urandom(8).hex())
    storage._stores.clear()
    src = tmp_path / "x.txt"
    src.write_bytes(b"genefarm over oss\n" * 1000)
    uri = f"oss://{b}/dir/x.txt"
    storage.put(str(src), uri)
    assert storage.stat(uri)["size"] == src.stat().st_size
    got = storage.fetch(uri, str(tmp_path / "dl"))
    assert open(got, "rb").read() == src.read_bytes()
    assert c.get_object(Bucket=b, Key="dir/x.txt")["Body"].read() == src.read_bytes()   # the same object
    with pytest.raises(storage.StorageError) as e:
        storage.stat(f"oss://{b}/dir/missing.txt")
    assert e.value.kind == "missing"
    storage._stores.clear()


def test_a_kernel_past_its_memory_is_stopped_and_the_failure_says_so(tmp_path, tiny):
    """The task asks for 40 MB; the index kernel needs far more: the worker stops it, and the
    report is a failure (never a preemption) that says how much it used of how much."""
    ref = tiny["ref"]
    out = str(tmp_path / "work" / "idx")
    p, m = message(tmp_path, {"reference": ref}, out)
    d = json.loads(open(p).read())
    d["resources"]["memory_mb"] = 40
    open(p, "w").write(json.dumps(d))
    r = run_worker(p)
    assert r.returncode == 1, r.stderr
    rep = report(m)
    assert rep["outcome"] == "failed" and rep["memory"]["exceeded"] and rep["memory"]["limit_mb"] == 40
    assert "killed for memory: used" in rep["message"] and "of 40 MB asked for" in rep["message"]
    assert rep["memory"]["peak_private_mb"] > 40
    assert not os.path.exists(out) and not [x for x in os.listdir(tmp_path / "work") if "partial" in x]
    # with room, the same task runs, and its report gives the kernel's peak private memory
    d["resources"]["memory_mb"] = 2000
    d["attempt"] = 2
    d["report"] = str(tmp_path / "report-7-2")
    open(p, "w").write(json.dumps(d))
    r = run_worker(p)
    assert r.returncode == 0, r.stderr
    rep = json.load(open(os.path.join(d["report"], "report.json")))
    assert rep["outcome"] == "done" and not rep["memory"]["exceeded"] and 40 < rep["memory"]["peak_private_mb"] < 2000
