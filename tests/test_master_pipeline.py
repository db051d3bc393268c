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


def genefarm_run(home, tiny, *extra, backend="local", env=None, name="tiny", regions=4, r2=None):
    e = dict(os.environ, GENEFARM_HOME=str(home), GENEFARM_POLL_SECONDS="0.5", PYTHONPATH=ROOT, **(env or {}))
    r = subprocess.run([sys.executable, "-m", "master.cli", "run", tiny["r1"], r2 or tiny["r2"], "--reference",
                        tiny["ref"], "--name", name, "--regions", str(regions), "--backend", backend,
                        "--chunk-pairs", "5000", "--json", *extra], capture_output=True, text=True, env=e,
                       timeout=1200)
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


def test_region_count_does_not_change_the_vcf(local_run, tiny, tmp_path):
    home, res = local_run
    rc, res8, err = genefarm_run(tmp_path / "h8", tiny, regions=9, name="tiny9")
    assert rc == 0, err
    assert records(res8["summary"]["qc"]["vcf"]) == records(res["summary"]["qc"]["vcf"])


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
