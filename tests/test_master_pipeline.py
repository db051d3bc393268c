"""The whole sample pipeline through the master: FASTQ -> BAM + VCF, on local, DRMAA (SGE) and Slurm.

These need the kernels kernels.split, kernels.call and kernels.align --parts. Until the kernels
engineer has landed them, each test here is skipped with that reason (a missing kernel is not a
missing daemon: nothing the test set-up could start).
"""
import gzip
import importlib.util
import json
import os
import subprocess
import sys

import pysam
import pytest

from conftest import ROOT
from gf_daemons import JEMALLOC, sge_env, slurm_env  # noqa: F401  (fixtures)


def _kernels_missing():
    missing = [m for m in ("kernels.split", "kernels.call") if importlib.util.find_spec(m) is None]
    r = subprocess.run([sys.executable, "-m", "kernels.align", "--help"], capture_output=True, text=True)
    if "--parts" not in r.stdout:
        missing.append("kernels.align --parts")
    return missing


MISSING = _kernels_missing()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"waiting for the kernels: {', '.join(MISSING)}")


def genefarm_run(home, tiny, *extra, backend="local", env=None, name="tiny", regions=4, r2=None, chunk=5000):
    e = dict(os.environ, GENEFARM_HOME=str(home), GENEFARM_POLL_SECONDS="0.5", PYTHONPATH=ROOT, **(env or {}))
    r = subprocess.run([sys.executable, "-m", "master.cli", "run", tiny["r1"], r2 or tiny["r2"], "--reference",
                        tiny["ref"], "--name", name, "--regions", str(regions), "--backend", backend,
                        *(["--chunk-pairs", str(chunk)] if chunk else []), "--json", *extra],
                       capture_output=True, text=True, env=e, timeout=1200)
    try:
        res = json.loads(r.stdout) if r.stdout.strip() else None
    except ValueError:
        res = None
    return r.returncode, res, r.stderr


def records(vcf):
    with pysam.VariantFile(vcf) as f:
        return [str(rec) for rec in f]


def check_outputs(res):
    qc = res["summary"]["qc"]
    for p in (qc["bam"], qc["bam"] + ".bai", qc["vcf"], qc["vcf"] + ".tbi"):
        assert os.path.exists(p), p
    with pysam.AlignmentFile(qc["bam"]) as f:
        assert f.check_index()
    assert qc["reads"] == 40000 and qc["mapped"] > 39000 and qc["variants"] > 1000
    assert set(res["summary"]["stages"]) == {"index", "split", "align", "call", "gather"}
    return records(qc["vcf"])


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny):
    home = tmp_path_factory.mktemp("home")
    rc, res, err = genefarm_run(home, tiny)
    assert rc == 0, err
    return home, res


def test_local_run_gives_bam_and_vcf(local_run):
    home, res = local_run
    assert res["state"] == "done"
    assert len(check_outputs(res)) > 1000


def test_logs_and_explain_of_a_finished_run(local_run):
    from master import settings as settings_mod
    from master.app import create_app
    home, res = local_run
    s = settings_mod.load(str(home))
    c = create_app(s).test_client()
    h = {"Authorization": "Bearer " + open(s.token_file).read().strip()}
    align = next(t for t in res["task_list"] if t["stage"] == "align")
    att = c.get(f"/api/v1/tasks/{align['id']}/attempts", headers=h).json[-1]
    log = c.get(f"/api/v1/attempts/{att['id']}/log", headers=h).get_data(as_text=True)
    assert f"task {align['id']} (align/c0000) attempt 1" in log and ": done" in log
    assert att["cpu_seconds"] > 0 and att["peak_mb"] > 0 and att["node"] and att["end_reason"] == "done"
    text = c.get(f"/api/v1/tasks/{align['id']}/explain", headers=h).json["text"]
    assert "never run before" in text and "attempt 1 done" in text


def test_region_count_does_not_change_the_vcf(local_run, tiny, tmp_path):
    home, res = local_run
    rc, res8, err = genefarm_run(tmp_path / "h8", tiny, regions=9, name="tiny9")
    assert rc == 0, err
    assert records(res8["summary"]["qc"]["vcf"]) == records(res["summary"]["qc"]["vcf"])


def test_one_task_at_a_time_aligns_the_lane_whole_and_gives_the_same_vcf(local_run, tiny, tmp_path):
    """On a backend that runs one task at a time the planner makes the sample one chunk: no split
    task, one align task reading the lane's files; the VCF is the one four chunks give."""
    home, res = local_run
    rc, res1, err = genefarm_run(tmp_path / "h1", tiny, name="whole", chunk=None,
                                 env={"GENEFARM_PARALLEL_TASKS": "1"})
    assert rc == 0, err
    keys = sorted(t["key"] for t in res1["task_list"])
    assert not [k for k in keys if k.startswith("split")] and [k for k in keys if k.startswith("align")] == \
        ["align/c0000"]
    assert res1["summary"]["qc"]["reads"] == 40000
    assert records(res1["summary"]["qc"]["vcf"]) == records(res["summary"]["qc"]["vcf"])


def test_a_resubmission_reruns_nothing(local_run, tiny):
    home, res = local_run
    rc, res2, err = genefarm_run(home, tiny, "--resubmit")
    assert rc == 0, err
    assert all(t["cached"] for t in res2["task_list"]), [t for t in res2["task_list"] if not t["cached"]]


def test_fastq_counts_that_differ_fail_before_alignment(tmp_path, tiny):
    short = tmp_path / "short_R2.fastq.gz"
    with gzip.open(tiny["r2"], "rb") as f, gzip.open(short, "wb") as g:
        lines = f.read().split(b"\n")
        g.write(b"\n".join(lines[:-41]) + b"\n")          # 10 records fewer
    rc, res, err = genefarm_run(tmp_path / "h", tiny, name="short", r2=str(short))
    assert rc == 2, err
    tasks = res["task_list"]
    assert [t["state"] for t in tasks if t["key"] == "split"] == ["failed"]
    assert not [t for t in tasks if t["stage"] == "align"]          # found before alignment started
    assert "bad input" in err


def test_lanes_each_with_its_read_group(tmp_path, tiny):
    """Two lanes of one sample through `genefarm run R1 R2 R1 R2`: a read group per lane (ids from
    the Illumina file names), one BAM and VCF; a pair sequenced in both lanes is a duplicate."""
    def recs(p):
        with gzip.open(p, "rt") as f:
            lines = f.read().splitlines()
        return [lines[i:i + 4] for i in range(0, len(lines), 4)]
    files = []
    for m in (1, 2):
        rs = recs(tiny[f"r{m}"])
        lane1, lane2 = rs[:10000], rs[10000:] + [[n.replace("tiny.", "again."), s, p, "5" * len(q)]
                                                 for n, s, p, q in rs[:200]]
        for lane, part in ((1, lane1), (2, lane2)):
            path = tmp_path / f"s_S1_L00{lane}_R{m}_001.fastq.gz"
            with gzip.open(path, "wt") as f:
                f.write("".join("\n".join(r) + "\n" for r in part))
            files.append((lane, m, str(path)))
    order = [p for _, _, p in sorted(files)]          # L001 R1, L001 R2, L002 R1, L002 R2
    e = dict(os.environ, GENEFARM_HOME=str(tmp_path / "home"), GENEFARM_POLL_SECONDS="0.5", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "master.cli", "run", *order, "--reference", tiny["ref"], "--name",
                        "lanes", "--regions", "3", "--chunk-pairs", "6000", "--json"], capture_output=True, text=True,
                       env=e, timeout=1200)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    keys = sorted(t["key"] for t in res["task_list"])
    assert [k for k in keys if k.startswith("split")] == ["split/L001", "split/L002"]
    assert "align/L001.c0000" in keys and "align/L002.c0001" in keys
    qc = res["summary"]["qc"]
    assert qc["reads"] == 40400
    with pysam.AlignmentFile(qc["bam"]) as f:
        rgs = {g["ID"]: g for g in f.header.to_dict()["RG"]}
        assert sorted(rgs) == ["lanes.L001", "lanes.L002"]
        assert {g["SM"] for g in rgs.values()} == {"lanes"} and {g["LB"] for g in rgs.values()} == {"lanes"}
        again = [x for x in f if x.query_name.startswith("again.")]
    assert len(again) == 400 and all(x.get_tag("RG") == "lanes.L002" for x in again)
    assert sum(x.is_duplicate for x in again) >= 390
    with pysam.VariantFile(qc["vcf"]) as v:
        assert list(v.header.samples) == ["lanes"]
    assert qc["variants"] > 1000


@pytest.mark.slow
def test_drmaa_on_sge_and_slurm_give_the_same_vcf_as_local(local_run, tiny, tmp_path, sge_env, slurm_env):  # noqa: F811
    home, res = local_run
    want = records(res["summary"]["qc"]["vcf"])
    rc, r_sge, err = genefarm_run(tmp_path / "sge", tiny, backend="drmaa",
                                  env=dict(sge_env, LD_PRELOAD=JEMALLOC))
    assert rc == 0, err
    assert r_sge["backend"] == "drmaa"
    assert check_outputs(r_sge) == want
    rc, r_slurm, err = genefarm_run(tmp_path / "slurm", tiny, backend="slurm", env=slurm_env)
    assert rc == 0, err
    assert check_outputs(r_slurm) == want


@pytest.mark.slow
def test_sigkill_master_and_poller_mid_pipeline_then_restart(local_run, tiny, tmp_path):
    """SIGKILL `genefarm serve` and its poller while align tasks run; start again: the run finishes,
    no finished task runs again, none is doubled, and the VCF is the one an undisturbed run gives."""
    import signal
    import time

    from gf_daemons import free_port, stop_pid
    from master.client import Client
    home, res = local_run
    want = records(res["summary"]["qc"]["vcf"])
    h2 = tmp_path / "home"
    env = dict(os.environ, GENEFARM_HOME=str(h2), GENEFARM_POLL_SECONDS="0.5", PYTHONPATH=ROOT,
               GENEFARM_HEARTBEAT_SECONDS="1")
    port = free_port()

    def start():
        p = subprocess.Popen([sys.executable, "-m", "master.cli", "serve", "--port", str(port), "--json"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        info = json.loads(p.stdout.readline())
        return p, info["poller_pid"]

    master, poller = start()
    try:
        c = Client(f"http://127.0.0.1:{port}", open(h2 / "token").read().strip())
        c.post("/references", {"name": "chr20sim", "uri": tiny["ref"]})
        run = c.post("/samples", {"name": "k", "reference": "chr20sim", "r1": tiny["r1"], "r2": tiny["r2"],
                                  "regions": 4, "params": {"chunk_pairs": 5000}})["run"]   # as local_run
        t0 = time.time()
        while time.time() - t0 < 300:
            ts = c.get(f"/runs/{run['id']}/tasks")
            aligns = [t for t in ts if t["stage"] == "align"]
            if any(t["state"] == "done" for t in aligns) and any(t["state"] in ("running", "queued") for t in aligns):
                break
            time.sleep(0.2)
        done_before = {t["id"]: t["attempts"] for t in ts if t["state"] == "done"}
        assert any(t["stage"] == "align" for t in ts if t["id"] in done_before), ts
        os.kill(master.pid, signal.SIGKILL)
        os.kill(poller, signal.SIGKILL)
        master.wait(10)
        master, poller = start()
        t0 = time.time()
        while time.time() - t0 < 600:
            r = c.get(f"/runs/{run['id']}")
            if r["state"] != "running":
                break
            time.sleep(0.5)
        assert r["state"] == "done", r
        ts = c.get(f"/runs/{run['id']}/tasks")
        for t in ts:
            atts = c.get(f"/tasks/{t['id']}/attempts")
            assert len([a for a in atts if a["end_reason"] == "done"]) == 1, (t["key"], atts)   # not doubled
            if t["id"] in done_before:
                assert len(atts) == done_before[t["id"]]                                          # not re-run
        assert records(r["summary"]["qc"]["vcf"]) == want
    finally:
        stop_pid(master.pid)
        master.wait(30)
        stop_pid(poller)
