"""The reconciler's order of steps, with its seams replaced (provider, scheduler, hosts): a node
leaves drained (drain -> wait -> requeue what is still running -> stop -> forget -> release), and a
vanished host is drained and its jobs requeued at once before it is removed. The real daemons are
in test_bcc_cluster.py."""
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, ROOT)
from bcc import state  # noqa: E402
from bcc.providers.base import Machine  # noqa: E402


class FakeRemote:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, cmd, timeout=600, check=True, input=None):
        self.log.append(("run", self.name, cmd.split()[0] if cmd else ""))
        return 0, "", ""

    def put(self, path, data, mode=0o644):
        self.log.append(("put", self.name, path))

    def get(self, path):
        return b""

    def close(self):
        pass


class FakeProvider:
    def __init__(self, log):
        self.log, self.gone = log, set()
        self.config = {}

    def describe(self, cluster_id):
        return [Machine(n, n, "10.0.0.1", 1) for n in ("n1", "n2", "n3") if n not in self.gone]

    def destroy(self, cluster_id, machines):
        self.log.append(("destroy", tuple(sorted(m.name for m in machines))))

    def remote(self, machine):
        if machine.name in self.gone:
            from bcc.errors import BccError
            raise BccError(f"cannot reach {machine.name}")
        return FakeRemote(machine.name, self.log)

    def master_remote(self):
        return FakeRemote("master", self.log)


class FakeSched:
    """Jobs per node; a job 'runs' for a number of polls, or forever (None) until requeued."""

    def __init__(self, log, jobs):
        self.log, self.jobs_left = log, jobs

    def drain(self, node):
        self.log.append(("drain", node.name))

    def jobs_on(self, node):
        out = []
        for j, (host, polls) in list(self.jobs_left.items()):
            if host != node.name:
                continue
            if polls is not None:
                if polls <= 0:
                    del self.jobs_left[j]
                    continue
                self.jobs_left[j] = (host, polls - 1)
            out.append(j)
        return out

    def requeue(self, jobs):
        """Like the real ones: the jobs still there are taken back, and returned."""
        self.log.append(("requeue", tuple(jobs)))
        self.jobs_left.update({j: v for j, v in self.ends_before_requeue.items() if j in jobs})
        return [j for j in jobs if self.jobs_left.pop(j, None) is not None and j not in self.ends_before_requeue]

    ends_before_requeue = {}

    def node_stop(self):
        return "stop-daemons"

    def forget(self, nodes, members, remotes):
        self.log.append(("forget", tuple(n.name for n in nodes), tuple(sorted(m.name for m in members))))

    def up_nodes(self):
        return {"n1", "n2", "n3"}


@pytest.fixture
def ops(tmp_path, monkeypatch):
    from bcc import cluster, providers
    log = []
    prov = FakeProvider(log)
    monkeypatch.setattr(providers, "get", lambda *a, **k: prov)
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    base = str(tmp_path)
    with state.sessions(base)() as db:
        db.add(state.Cluster(id="c-test", provider="ssh", scheduler="sge", state="running",
                             master={"name": "master", "address": "10.0.0.1"}, config={"drain_timeout": 600}))
        db.add(state.Group(cluster_id="c-test", name="default", instance_type="cpu1", image="debian12", size=3))
        for n in ("n1", "n2", "n3"):
            db.add(state.Node(cluster_id="c-test", group="default", name=n, address="10.0.0.2", provider_id=n,
                              state="up", slots=1))
        db.commit()
    o = cluster.Ops("c-test", talk=lambda *a: None, progress=False, base=base)
    o._master = FakeRemote("master", log)
    yield o, log, prov
    o.close()


def _node(o, name):
    return next(n for n in state.live_nodes(o.db, o.c.id) if n.name == name)


def test_remove_drains_waits_then_releases(ops):
    o, log, _ = ops
    o._sched = FakeSched(log, {"7.1": ("n3", 3), "7.2": ("n2", 1)})     # both finish while draining
    o.remove([_node(o, "n2"), _node(o, "n3")])
    steps = [e[0] for e in log if e[0] != "put"]
    assert steps.index("drain") < steps.index("run") < steps.index("forget") < steps.index("destroy")
    assert ("requeue", ("7.1",)) not in log and not any(e[0] == "requeue" for e in log)   # finished, not requeued
    assert ("forget", ("n2", "n3"), ("n1",)) in log
    assert [n.name for n in state.live_nodes(o.db, o.c.id)] == ["n1"]
    ev = [(e.step, e.node) for e in o.db.query(state.Event).order_by(state.Event.id)]
    for name in ("n2", "n3"):
        assert ev.index(("drain", name)) < ev.index(("stop", name)) < ev.index(("release", name))


def test_jobs_still_running_after_the_drain_timeout_are_requeued(ops):
    o, log, _ = ops
    o._sched = FakeSched(log, {"9.4": ("n3", None), "9.5": ("n1", None)})  # never finish by themselves
    o.remove([_node(o, "n3")], drain_timeout=0)
    assert ("requeue", ("9.4",)) in log                                  # only the removed node's job
    assert "9.5" in o._sched.jobs_left
    i = log.index(("requeue", ("9.4",)))
    assert any(e[0] == "drain" for e in log[:i]) and any(e[0] == "forget" for e in log[i:])
    assert any(e.step == "requeue" and e.node == "n3" for e in o.db.query(state.Event))


def test_a_job_that_ends_between_the_look_and_the_requeue_is_not_said_to_be_requeued(ops):
    """The race the lifecycle test once met: bcc saw a job on a draining node, the job finished, then
    bcc asked for its requeue. The scheduler refuses a job that ended, and bcc's log says it ended;
    only the jobs the scheduler took back are reported as requeued."""
    o, log, _ = ops
    o._sched = FakeSched(log, {"9.4": ("n3", None), "9.6": ("n3", None)})
    o._sched.ends_before_requeue = {"9.6": ("n3", None)}
    o.remove([_node(o, "n3")], drain_timeout=0)
    ev = [(e.step, e.message) for e in o.db.query(state.Event) if e.node == "n3"]
    req = [m for st, m in ev if st == "requeue"]
    assert len(req) == 1 and "9.4" in req[0] and "9.6" not in req[0], ev
    assert any(st == "drain" and "9.6 ended before" in m for st, m in ev), ev


def test_reconcile_drains_and_requeues_a_vanished_host(ops):
    o, log, prov = ops
    o._sched = FakeSched(log, {"11.1": ("n2", None)})
    prov.gone.add("n2")
    r = o.reconcile()
    assert r == {"vanished": ["n2"], "not_in_scheduler": []}
    assert log.index(("drain", "n2")) < log.index(("requeue", ("11.1",))) < \
        next(i for i, e in enumerate(log) if e[0] == "forget")
    assert not any(e[0] == "run" and e[1] == "n2" for e in log)         # a vanished host is not contacted
    assert [n.name for n in state.live_nodes(o.db, o.c.id)] == ["n1", "n3"]
    msgs = [e.message for e in o.db.query(state.Event) if e.step == "reconcile"]
    assert any("vanished: n2" in m for m in msgs) and any("bcc resize default 3" in m for m in msgs)


def test_api_reads_while_a_command_holds_the_cluster(ops):
    """The master and web UI read bcc's state through bcc.api: no lock, no connection, so a read
    is answered while a bcc command (here the fixture's Ops) works on the cluster."""
    from bcc import api
    o, _, _ = ops
    o.save_config({"SGE_CELL": "gftest", "SGE_ROOT": "/var/lib/gridengine"}, "client_env")
    o.log("drain", "drained in sge: no new jobs start here", "n3")
    c = api.current(base=o.base)
    assert c is None                                   # started by hand here: nothing attached yet
    state.set_current("c-test", o.base)
    c = api.current(base=o.base)
    assert (c.id, c.scheduler, c.master_name, c.groups["default"]["size"]) == ("c-test", "sge", "master", 3)
    assert [(n.name, n.state) for n in api.nodes("c-test", base=o.base)] == [("n1", "up"), ("n2", "up"), ("n3", "up")]
    assert api.events("c-test", base=o.base)[-1].message == "drained in sge: no new jobs start here"
    assert api.scheduler_settings("c-test", base=o.base)["SGE_CELL"] == "gftest"
    assert [v.id for v in api.clusters(base=o.base)] == ["c-test"]
