"""Every backend, the same probe (tests/backend_probe.py), against the real scheduler."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from gf_daemons import drmaa_env, sge_env, slurm_env  # noqa: F401  (fixtures)

PROBE = os.path.join(ROOT, "tests", "backend_probe.py")


def probe(name, tmp_path, env=None):
    r = subprocess.run([sys.executable, PROBE, name, str(tmp_path)], capture_output=True, text=True,
                       env=env or os.environ.copy(), timeout=400, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout), r.stderr


def check(out):
    ids = out["ids"]
    assert len(ids) == 3 and len(set(ids)) == 3
    c = [out["codes"][i] for i in ids]
    assert c[0]["state"] == "done" and c[0]["exit"] == 0
    assert c[1]["state"] == "failed" and c[1]["exit"] == 3 and not c[1]["signal"]
    assert c[2]["state"] == "failed" and c[2]["signal"] == 9, c[2]
    for k in ("1", "2", "3"):
        assert f"element={k} " in out["logs"][k] and "gftest=yes" in out["logs"][k], out["logs"]
    assert out["ranks"]["state"] == "done"
    assert all(v["state"] in ("cancelled", "failed") for v in out["cancel"].values()), out["cancel"]
    assert out["bogus"] == "unknown"


def test_local_backend(tmp_path):
    out, _ = probe("local", tmp_path)
    assert out["backend"] == "local"
    check(out)


@pytest.mark.slow
def test_sge_native_backend(tmp_path, sge_env):  # noqa: F811
    out, _ = probe("sge", tmp_path)
    assert out["backend"] == "sge"
    check(out)
    assert "nslots=2" in out["ranks"]["log"], out["ranks"]      # the parallel environment gave 2 slots


@pytest.mark.slow
def test_drmaa_backend_on_sge(tmp_path, sge_env):  # noqa: F811
    out, err = probe("drmaa", tmp_path, env=drmaa_env(sge_env))
    assert out["backend"] == "drmaa", err                         # not the loud fallback
    check(out)
    assert "nslots=2" in out["ranks"]["log"], out["ranks"]


@pytest.mark.slow
def test_drmaa_falls_back_to_sge_loudly(tmp_path, sge_env):  # noqa: F811
    env = dict(os.environ, DRMAA_LIBRARY_PATH="/nonexistent/libdrmaa.so")
    out, err = probe("drmaa", tmp_path, env=env)
    assert out["backend"] == "sge"
    assert "DRMAA COULD NOT BE LOADED" in err and "FALLING BACK" in err
    check(out)


@pytest.mark.slow
def test_slurm_backend(tmp_path, slurm_env):  # noqa: F811
    out, _ = probe("slurm", tmp_path)
    assert out["backend"] == "slurm"
    check(out)
    assert "ntasks=2" in out["ranks"]["log"], out["ranks"]


@pytest.mark.slow
def test_the_poller_loads_drmaa_by_itself(tmp_path, sge_env):  # noqa: F811
    """SGE's libdrmaa needs jemalloc preloaded at process start: the poller re-executes itself with it."""
    env = dict(os.environ, GENEFARM_HOME=str(tmp_path / "home"), GENEFARM_BACKEND="drmaa", PYTHONPATH=ROOT)
    env.pop("LD_PRELOAD", None)
    p = subprocess.Popen([sys.executable, "-m", "master.poller"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
    finally:
        p.terminate()
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()                          # never leave a poller behind
            p.wait(10)
            rc = None
    assert rc == 0, "the poller did not stop on SIGTERM"
    assert "backend drmaa" in line, line
    assert "FALLING BACK" not in line
