"""The master against real failures, with the real local backend, real workers and real kernels:
a task's process group killed on its node; the master and the poller killed with SIGKILL mid-run.

The runs here hold only index tasks (one per reference, references made for the test), because
they are the stage whose kernel exists today; the engine treats every stage alike.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from conftest import ROOT
from gf_daemons import free_port, sge_env, slurm_env, stop_pid  # noqa: F401  (fixtures)
from master import explain
from master import settings as settings_mod
from master.backends import get_backend
from master.engine import Engine
from master.states import RunState
from master.store import Reference, Run, Sample, Task, open_store
from worker.message import read_heartbeat
from test_worker import random_fasta


def index_run(Session, tmp_path, n, size):
    """A run with n index tasks over n distinct random references (so none is cached)."""
    with Session() as db:
        refs = []
        for i in range(n):
            p = random_fasta(str(tmp_path / f"ref{i}.fa"), (("a", size),), seed=100 + i)
            refs.append(Reference(name=f"r{i}", uri=p, sha256=f"{i:064x}", contigs=1, bases=size))
        db.add_all(refs)
        s = Sample(name="idx", reference=refs[0], r1=refs[0].uri, r2=refs[0].uri, regions=1)
        run = Run(sample=s, backend="local", state=RunState.RUNNING.value, summary={})
        db.add_all([s, run])
        db.flush()
        for i, r in enumerate(refs):
            db.add(Task(run_id=run.id, stage="index", key=f"index/{i}", deps=[], inputs={"reference": r.uri},
                        basis={"inputs": {"reference": f"file:{r.uri}"}}, state="pending",
                        resources={"cpus": 1, "ranks": 1}))
        db.commit()
        return run.id


def tasks(Session, run_id):
    with Session() as db:
        q = select(Task).where(Task.run_id == run_id).options(selectinload(Task.attempts)).order_by(Task.id)
        return list(db.scalars(q))


@pytest.mark.parametrize("backend", ["local", pytest.param("sge", marks=pytest.mark.slow),
                                     pytest.param("slurm", marks=pytest.mark.slow)])
def test_a_killed_process_group_is_noticed_and_requeued(tmp_path, backend, request):
    if backend != "local":
        request.getfixturevalue(f"{backend}_env")             # the real scheduler, started for the test
    s = settings_mod.load(str(tmp_path / "home"), poll_seconds=0.3, local_slots=2, backend=backend,
                          heartbeat_seconds=0.5)
    _, Session = open_store(s.db_url)
    eng = Engine(s, Session, get_backend(s))
    rid = index_run(Session, tmp_path, 1, 30_000_000)
    killed = False
    t0 = time.time()
    while time.time() - t0 < 180:
        eng.tick()
        t = tasks(Session, rid)[0]
        hb = read_heartbeat(eng.report_dir(t, 1))
        if not killed and hb and hb.get("phase") == "running":
            # the whole job on its node: the worker's process group (runner or job shell, worker, kernel)
            os.killpg(os.getpgid(hb["pid"]), signal.SIGKILL)
            killed = True
        if t.state == "done":
            break
        time.sleep(0.3)
    t = tasks(Session, rid)[0]
    assert killed and t.state == "done", [(a.end_reason, a.message) for a in t.attempts]
    assert (t.retries, t.preemptions, len(t.attempts)) == (0, 1, 2)
    assert [a.end_reason for a in t.attempts] == ["preempted", "done"]
    with Session() as db:
        text = explain.task(db, db.get(Task, t.id))["text"]
    assert "killed by signal 9" in text and "without spending a retry" in text


def start_master(home, port):
    env = dict(os.environ, GENEFARM_HOME=home, GENEFARM_POLL_SECONDS="0.3", GENEFARM_LOCAL_SLOTS="2",
               GENEFARM_HEARTBEAT_SECONDS="0.5", PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "master.cli", "serve", "--port", str(port), "--json"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    try:
        return p, json.loads(line)["poller_pid"]
    except (ValueError, KeyError):
        stop_pid(p.pid)
        raise AssertionError(f"genefarm serve did not start: {line!r}") from None


@pytest.mark.slow
def test_sigkill_master_and_poller_mid_run_then_restart(tmp_path):
    home = str(tmp_path / "home")
    s = settings_mod.load(home)
    _, Session = open_store(s.db_url)
    n = 6
    rid = index_run(Session, tmp_path, n, 25_000_000)
    port = free_port()
    master, poller = start_master(home, port)
    try:
        t0 = time.time()
        while time.time() - t0 < 120:
            ts = tasks(Session, rid)
            states = [t.state for t in ts]
            if states.count("done") >= 1 and states.count("running") >= 1:
                break
            time.sleep(0.2)
        done_before = {t.id: [a.id for a in t.attempts] for t in ts if t.state == "done"}
        assert done_before and "running" in states, states
        os.kill(master.pid, signal.SIGKILL)
        os.kill(poller, signal.SIGKILL)
        master.wait(10)
        time.sleep(1.0)                                      # workers go on without a master
        master, poller = start_master(home, port)
        t0 = time.time()
        while time.time() - t0 < 180:
            ts = tasks(Session, rid)
            if all(t.state == "done" for t in ts):
                break
            time.sleep(0.3)
    finally:
        stop_pid(master.pid)
        master.wait(30)
        stop_pid(poller)
    ts = tasks(Session, rid)
    assert [t.state for t in ts] == ["done"] * n
    for t in ts:
        assert t.id not in done_before or [a.id for a in t.attempts] == done_before[t.id]   # not run again
        assert len([a for a in t.attempts if a.end_reason == "done"]) == 1                   # not doubled
        assert len(t.attempts) == 1, [(a.number, a.end_reason, a.message) for a in t.attempts]
        marker = json.load(open(os.path.join(t.outputs["out"], "_genefarm.json")))
        assert marker["task"] == t.id and marker["attempt"] == 1
    # one backend job per attempt: nothing was submitted twice
    jobs = sum(len(json.load(open(os.path.join(s.dir("jobs"), d, "spec.json")))["argv"]) > 0
               and json.load(open(os.path.join(s.dir("jobs"), d, "spec.json")))["count"]
               for d in os.listdir(s.dir("jobs")))
    assert jobs == n
