"""bcc on three test hosts + the master, for SGE and for Slurm: start 2 nodes, an array job across
them, grow to 3, shrink to 1 while jobs run (none lost: drained or requeued), roll the group to
another image, a killed execd/slurmd restarted by the watchdog, stop refusing while a job is
queued, then stop leaving nothing running. Real daemons, real sshd, real SSH (paramiko)."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

import testhosts
from bcc_hosts import bcc, bcc_background, hosts  # noqa: F401  (fixture)
from gf_daemons import free_port

NODE_ROOT = "/var/lib/genefarm-node"
NODES = ["gfnode1", "gfnode2", "gfnode3"]

JOB = """#!/bin/sh
#$ -S /bin/sh
T=${SGE_TASK_ID:-$SLURM_ARRAY_TASK_ID}
hostname >> %(out)s/starts.$T
sleep %(sleep)s
%(hold)s
echo "$(hostname) $T" > %(out)s/done.$T.tmp && mv %(out)s/done.$T.tmp %(out)s/done.$T
"""


class Cluster:
    def __init__(self, h, home, sched, tmp):
        self.h, self.home, self.sched, self.tmp = h, home, sched, tmp
        self.cid = None

    def bcc(self, *a, check=0, **kw):
        return bcc(self.home, *a, check=check, **kw)

    def status(self):
        _, out, _ = self.bcc("status", "--json")
        return json.loads(out)

    def nodes(self, group="default"):
        g = next(g for g in self.status()["groups"] if g["name"] == group)
        return g["nodes"]

    def state_dir(self):
        return f"{NODE_ROOT}/{self.cid}/{self.sched}"

    def on_master(self, cmd, check=True, timeout=120):
        env = "sge.env" if self.sched == "sge" else "slurm.env"
        return self.h.on("master", f". {self.state_dir()}/{env} && {cmd}", check=check, timeout=timeout)

    def submit(self, tasks, sleep, tag, hold=False):
        """An array of `tasks` tasks of `sleep` seconds; hold: each task then waits until the test
        creates OUT/release, so that it is still running whatever the machine's load."""
        out = os.path.join(self.tmp, tag)
        os.makedirs(out)
        script = os.path.join(self.tmp, f"{tag}.sh")
        wait = f"while [ ! -e {out}/release ]; do sleep 1; done" if hold else ""
        with open(script, "w") as f:
            f.write(JOB % {"sleep": sleep, "out": out, "hold": wait})
        os.chmod(script, 0o755)
        if self.sched == "sge":
            jid = self.on_master(f"qsub -terse -t 1-{tasks} -o /dev/null -e /dev/null -N {tag} {script}").split(".")[0]
        else:
            jid = self.on_master(f"sbatch --parsable --array=1-{tasks} -o /dev/null -e /dev/null -J {tag} {script}")
        return jid.strip(), out

    def wait_done(self, out, tasks, timeout=240):
        t0 = time.time()
        while time.time() - t0 < timeout:
            done = [f for f in os.listdir(out) if f.startswith("done.") and not f.endswith(".tmp")]
            if len(done) == tasks:
                res = {}
                for f in done:
                    with open(os.path.join(out, f)) as fh:
                        host, t = fh.read().split()
                    res[int(t)] = host
                return res
            time.sleep(1)
        raise AssertionError(f"only {sorted(os.listdir(out))} of {tasks} tasks done after {timeout} s\n"
                             + self.bcc("status")[1])

    def running_hosts(self):
        if self.sched == "sge":
            txt = self.on_master("qstat -u '*' -s r", check=False)
            return {ln.split("@")[1].split()[0] for ln in txt.splitlines() if "genefarm.q@" in ln}
        txt = self.on_master("squeue -h -t R -o %N", check=False)
        return {x.strip() for x in txt.split() if x.strip()}

    def host_list(self):
        """The hosts the scheduler is configured with (not only the ones up)."""
        if self.sched == "sge":
            hosts = set(self.on_master("qconf -sel", check=False).split())
            assert set(self.on_master("qconf -shgrp_resolved @gf_default").split()) == hosts
            return hosts
        return set(self.on_master("sinfo -h -N -o %N").split())

    def stop_if_running(self):
        if self.cid and self.status()["cluster"]["state"] != "stopped":
            self.bcc("stop", "--force", check=None, timeout=600)


def _our_leftovers(h):
    """Processes still running in the test hosts other than their sshd (and its sessions)."""
    sshd = {p.pid for p in h.sshd.values()}
    left = []
    for pid in testhosts._our_processes():
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if pid in sshd or ppid in sshd or comm == "sshd" or testhosts._zombie(pid):
            continue
        left.append(f"{pid} {comm}")
    return left


@pytest.mark.slow
@pytest.mark.parametrize("sched", ["sge", "slurm"])
def test_cluster_lifecycle(hosts, tmp_path, sched, request):  # noqa: F811
    h = hosts
    home = str(tmp_path / "home")
    tmp = str(tmp_path / "shared")
    os.makedirs(tmp)
    os.chmod(str(tmp_path), 0o755)
    os.chmod(tmp, 0o777)
    nas = os.path.join(tmp, "nas")
    os.makedirs(nas)
    c = Cluster(h, home, sched, tmp)
    t_start = time.time()
    pool = ",".join(h.spec(n) for n in NODES)
    rc, out, err = c.bcc(
        "start", "-n", "2", "-t", "cpu2", "-i", "debian12", "--scheduler", sched, "--provider", "ssh",
        "--hosts", pool, "--master", h.spec("master"), "--identity", h.key,
        *h.host_key_args(["master"] + NODES), "--mount-mode", "bind",
        "-m", f"nas://master:{nas}:/data,s3://gf-refs/hg38/:/refs", "--vpc_cidr_block", "10.77.0.0/24",
        "--ports", f"{free_port()},{free_port()}", "--watchdog", "2", "--drain-timeout", "6",
        "--requeue-delay", "10", "--json")
    s = json.loads(out)
    c.cid = s["cluster"]["id"]
    request.addfinalizer(c.stop_if_running)        # a failed assertion still stops the daemons and the cell
    times = {"start -n 2": time.time() - t_start}
    default = s["groups"][0]
    assert default["name"] == "default" and [n["state"] for n in default["nodes"]] == ["up", "up"], s
    first = [n["name"] for n in default["nodes"]]
    assert set(s["scheduler_up"]) == set(first) and c.host_list() == set(first)
    # the master and the web UI read the same state through bcc.api
    from bcc import api
    base = os.path.join(home, "bcc")
    view = api.current(base=base)
    assert (view.id, view.scheduler, view.state) == (c.cid, sched, "running")
    assert {n.name for n in api.nodes(c.cid, base=base)} == set(first)
    env = api.scheduler_settings(c.cid, base=base)
    assert env["SGE_CELL"].startswith("gf") if sched == "sge" else env["SLURM_CONF"].endswith("/slurm.conf"), env
    # steps are logged and shown
    steps = {e["step"] for e in s["events"]}
    assert {"create", "bootstrap", "join", "up", "master"} <= steps, steps
    # attach names the cluster later commands act on; the reconciler finds the provider and the
    # scheduler in step (every pool host answers, both nodes are up in the scheduler)
    _, out, _ = c.bcc("attach", c.cid, "--json")
    assert json.loads(out)["cluster"]["id"] == c.cid
    _, out, _ = c.bcc("reconcile", "--json")
    assert json.loads(out) == {"vanished": [], "not_in_scheduler": []}

    # the NAS mount: read-write on the node (bind mount of the shared directory), the NFS line in its fstab
    h.on(first[0], "echo from-node > /data/written-on-node && grep -q . /etc/hosts")
    with open(os.path.join(nas, "written-on-node")) as f:
        assert f.read().strip() == "from-node"
    with open(h.node_file(first[0], f"{NODE_ROOT}/{c.cid}/fstab")) as f:
        fstab = f.read()
    assert f"master:{nas} /data nfs4 rw,hard" in fstab
    assert "s3fs#gf-refs:/hg38 /refs fuse ro," in fstab
    # /etc/hosts on the node now names the master and the other node (written by bcc)
    hosts_txt = h.on(first[0], "cat /etc/hosts")
    assert "10.77.0.1 master" in hosts_txt and all(f"{testhosts.address(n)} {n}" in hosts_txt for n in first)

    # 1. an array job runs across both nodes
    t = time.time()
    _, out1 = c.submit(6, 3, "arr1")
    res = c.wait_done(out1, 6)
    times["array of 6 x 3 s on 2 nodes"] = time.time() - t
    assert set(res.values()) == set(first), res

    # 2. grow to 3
    t = time.time()
    rc, out, err = c.bcc("resize", "default", "3", "--json")
    times["resize 2->3"] = time.time() - t
    nodes = json.loads(out)["groups"][0]["nodes"]
    assert len(nodes) == 3 and all(n["state"] == "up" for n in nodes)
    assert {n["name"] for n in nodes} == set(NODES) and c.host_list() == set(NODES)
    _, out2 = c.submit(3, 2, "arr2")
    c.wait_done(out2, 3)

    # 3. shrink to 1 while jobs run: the two newest drain; their jobs finish or are requeued, none lost
    t = time.time()
    # the tasks hold until released: when the drain timeout (6 s) ends, the drained nodes' tasks
    # still run whatever the machine's load (with plain 12 s tasks a loaded machine could finish
    # them during the resize's own steps, and then there was nothing to requeue)
    jid, out3 = c.submit(6, 12, "arr3", hold=True)
    while len(c.running_hosts()) < 3 and time.time() - t < 60:
        time.sleep(0.5)
    assert len(c.running_hosts()) == 3, c.running_hosts()
    times["array running on 3 nodes"] = time.time() - t
    t = time.time()
    p = bcc_background(home, "resize", "default", "1", "--json")
    try:
        seen = set()              # `bcc status` answers while the resize holds the cluster, and shows its steps
        while p.poll() is None:
            st = c.status()
            seen |= {(e["step"], e["node"]) for e in st["events"]}
            time.sleep(1)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    times["resize 3->1 (drain, requeue)"] = time.time() - t
    assert p.returncode == 0, err[-4000:]
    assert {("drain", n) for n in NODES if n != first[0]} <= seen, seen
    s = json.loads(out)
    left = s["groups"][0]["nodes"]
    assert [n["name"] for n in left] == [first[0]], left
    msgs = " | ".join(f"{e['node']}: {e['step']}: {e['message']}" for e in s["events"])
    assert "drain" in msgs and "requeue" in msgs, msgs           # drain timeout 6 s < the tasks' hold
    open(os.path.join(out3, "release"), "w").close()
    t = time.time()
    res = c.wait_done(out3, 6, timeout=300)
    times["rest of the 6 x 12 s array after the shrink"] = time.time() - t
    assert len(res) == 6                                          # no task lost
    # a requeued task ran again, to the end, on the node that stayed
    requeued = {int(x) for e in s["events"] if e["step"] == "requeue"
                for x in re.findall(rf"\b{jid}[._](\d+)", e["message"])}
    assert requeued, msgs
    for task in requeued:
        with open(os.path.join(out3, f"starts.{task}")) as f:
            starts = f.read().split()
        assert len(starts) >= 2 and starts[-1] == first[0] and res[task] == first[0], (task, starts, res)
    assert set(s["scheduler_up"]) == {first[0]}
    assert c.host_list() == {first[0]}                            # the reconciler took the others out

    # 4. a rolling update to another image: the new node joins first, then the old one leaves
    t = time.time()
    rc, out, err = c.bcc("update", "default", "-i", "debian12-sshfs", "--json")
    times["update (roll 1 node)"] = time.time() - t
    s = json.loads(out)
    nodes = s["groups"][0]["nodes"]
    assert len(nodes) == 1 and nodes[0]["image"] == "debian12-sshfs" and nodes[0]["name"] != first[0], nodes
    ev = [(e["step"], e["node"]) for e in s["events"]]
    ev = ev[max(i for i, e in enumerate(ev) if e[0] == "update"):]     # this update's steps only
    new = nodes[0]["name"]
    assert ev.index(("up", new)) < ev.index(("drain", first[0])), ev
    with open(h.node_file(new, f"{NODE_ROOT}/{c.cid}/image")) as f:
        assert f.read().strip() == "debian12-sshfs"

    # 5. the watchdog restarts a killed execd / slurmd
    pidfile = h.node_file(new, f"{c.state_dir()}/" + ("execd.pid" if sched == "sge" else f"slurmd-{new}.pid"))
    with open(pidfile) as f:
        old_pid = int(f.read())
    os.kill(old_pid, signal.SIGKILL)
    t0 = time.time()
    new_pid = old_pid
    while time.time() - t0 < 60:
        try:
            with open(pidfile) as f:
                new_pid = int(f.read() or 0)
            if new_pid != old_pid and os.path.exists(f"/proc/{new_pid}"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    assert new_pid != old_pid and os.path.exists(f"/proc/{new_pid}"), "the watchdog did not restart the daemon"
    times["watchdog restart"] = time.time() - t0
    with open(h.node_file(new, f"{c.state_dir()}/watchdog.log")) as f:
        assert "restarting" in f.read()
    t = time.time()
    _, out5 = c.submit(2, 1, "arr5")                                # and the node runs jobs again
    assert set(c.wait_done(out5, 2, timeout=120).values()) == {new}
    times["array of 2 x 1 s after the restart"] = time.time() - t

    # 6. stop refuses while a job is queued, then stops everything
    jid, _ = c.submit(1, 30, "arr6")
    rc, out, err = c.bcc("stop", check=1)
    assert "queued or running" in err and "--force" in err
    assert c.status()["cluster"]["state"] == "running"
    t = time.time()
    rc, out, err = c.bcc("stop", "--force", "--json")
    times["stop --force"] = time.time() - t
    s = json.loads(out)
    assert s["cluster"]["state"] == "stopped" and all(not g["nodes"] for g in s["groups"])
    assert _our_leftovers(h) == []
    for name in NODES:
        assert not os.path.exists(h.node_file(name, f"{NODE_ROOT}/{c.cid}")), f"{name} keeps bcc's directory"
    assert "master" not in h.on(NODES[0], "cat /etc/hosts")
    times["whole test"] = time.time() - t_start
    print(f"\nbcc timings, {sched}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))


@pytest.mark.slow
def test_refusals_leave_nothing(hosts, tmp_path):  # noqa: F811
    """A host that refuses SSH, an unknown host key, a wrong fingerprint: clear errors, nothing started."""
    h = hosts
    home = str(tmp_path / "home")
    base = ["start", "-n", "1", "-t", "cpu1", "-i", "debian12", "--scheduler", "slurm", "--identity", h.key,
            "--master", h.spec("master"), "--ports", f"{free_port()},{free_port()}", "--mount-mode", "bind"]
    # a host that refuses SSH (nothing listens on that port): exit 1, nothing left behind
    refusing = f"gfnode1=root@10.77.0.11:{free_port()}"
    rc, out, err = bcc(home, *base, "--hosts", refusing, *h.host_key_args(["master"]), check=1)
    assert "connection refused" in err and "sshd" in err, err
    _, out, _ = bcc(home, "status", "--all", "--json", check=0)
    cl = json.loads(out)["clusters"]
    assert len(cl) == 1 and cl[0]["state"] == "failed"
    assert not os.path.exists(h.node_file("master", f"{NODE_ROOT}/{cl[0]['id']}"))
    # an unknown host key and no fingerprint given: refused (exit 2), and the fingerprint is shown
    home2 = str(tmp_path / "home2")
    rc, out, err = bcc(home2, *base, "--hosts", h.spec("gfnode1"), check=2)
    assert "not in bcc's known hosts" in err and h.fingerprints["master"] in err, err
    # a wrong fingerprint: refused (exit 1)
    rc, out, err = bcc(home2, *base, "--hosts", h.spec("gfnode1"), "--host-key",
                       f"master={h.fingerprints['gfnode2']}", check=1)
    assert "not the expected" in err, err
    # a CIDR block outside the master's network (10.77.0.0/24): exit 2
    rc, out, err = bcc(home2, *base, "--hosts", h.spec("gfnode1"), *h.host_key_args(["master", "gfnode1"]),
                       "--vpc_cidr_block", "10.78.0.0/24", check=2)
    assert "outside the master's network 10.77.0.0/24" in err, err
    # wrong credentials: a key the hosts do not authorize (exit 1)
    stranger = os.path.join(str(tmp_path), "stranger_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger], check=True)
    rc, out, err = bcc(home2, *[stranger if a == h.key else a for a in base], "--hosts", h.spec("gfnode1"),
                       *h.host_key_args(["master", "gfnode1"]), check=1)
    assert "refused the SSH key" in err and stranger in err, err
    _, out, _ = bcc(home2, "status", "--all", "--json", check=0)
    assert json.loads(out)["clusters"] == []                     # refused before anything was recorded
    # resizing a group that does not exist
    rc, out, err = bcc(home, "resize", "nosuch", "2", "--cluster", cl[0]["id"], check=2)
    assert "no group 'nosuch'" in err
    assert _our_leftovers(h) == []
