"""What bcc does to a cluster: start, resize, update, stop, reconcile. One place for the
orchestration; providers make machines, schedulers keep their host lists, images/ configure hosts.

Every step is an event in the state database (shown by `bcc status`). A failed start rolls back
what it made (nodes released, master daemons stopped, provider resources removed); a node that
fails to join a running cluster is taken out again.
"""
import base64
import fcntl
import io
import os
import secrets
import shlex
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from bcc import images, providers, schedulers, state
from bcc.errors import BadInput, BccError
from bcc.providers.base import Machine
from bcc.specs import Mount, check_name, parse_cidr

NODE_ROOT = "/var/lib/genefarm-node"      # on every host: bcc's per-cluster directory (state, images)
JOIN_TIMEOUT = 240                        # seconds for joined nodes to show up in the scheduler
DRAIN_TIMEOUT = 600                       # seconds to wait for a draining node's jobs before requeueing them
q = shlex.quote


def group_names(count):
    return ["default"] + [f"group{i}" for i in range(1, count)]


class Ops:
    """One bcc command acting on one cluster (holds the cluster's lock)."""

    def __init__(self, cluster_id, talk, progress=True, base=None, lock=True):
        self.base = base or state.home()
        self.Session = state.sessions(self.base)
        self.db = self.Session()
        self.talk, self.show_progress = talk, progress
        self.c = self.db.get(state.Cluster, cluster_id)
        if self.c is None:
            raise BadInput(f"no cluster {cluster_id} in {state.db_path(self.base)}: `bcc status --all` lists them")
        self._lockf = None
        if lock:        # commands that change the cluster hold its lock; `bcc status` reads without it
            self._lockf = open(os.path.join(self.base, f"{cluster_id}.lock"), "w")
            try:
                fcntl.flock(self._lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lockf.close()
                raise BccError(f"another bcc command is working on cluster {cluster_id}: wait for it to finish "
                               "(`bcc status` shows its steps)") from None
        cfg = dict(self.c.config, bcc_home=self.base)
        self.provider = providers.get(self.c.provider, cfg, talk)
        self._master = None
        self._sched = None

    # ---------------------------------------------------------------- plumbing
    def close(self):
        if self.c.provider in ("aws",) and self._lockf:  # the provider may have recorded resources (subnet)
            self.save_config(self.provider.config.get("aws", {}), "aws")
        closer = getattr(self.provider, "close", None)
        if closer:
            closer()
        if self._master is not None:
            self._master.close()
        self.db.close()
        if self._lockf:
            self._lockf.close()

    def save_config(self, value, key):
        cfg = dict(self.c.config)
        cfg[key] = value
        self.c.config = cfg
        self.db.commit()

    def log(self, step, message, node=""):
        state.log_event(self.db, self.c.id, step, message, node)
        self.talk(f"bcc: {node + ': ' if node else ''}{message}")

    def set_node(self, node, st, detail=None):
        node.state = st
        if detail is not None:
            node.detail = detail[-2000:]
        self.db.commit()

    @property
    def master(self):
        if self._master is None:
            self._master = self.provider.master_remote()
        return self._master

    @property
    def sched(self):
        if self._sched is None:
            self._sched = schedulers.get(self.c.scheduler, self.c, self.master, self.talk)
        return self._sched

    def bar(self, total, desc):
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="node", file=__import__("sys").stderr,
                    disable=None if self.show_progress else True, leave=False)

    def machine(self, node):
        return Machine(node.provider_id, node.name, node.address, node.slots, "running")

    def remote(self, node):
        return self.provider.remote(self.machine(node))

    def members(self):
        return [n for n in state.live_nodes(self.db, self.c.id) if n.state in ("joining", "up", "draining")]

    def in_use(self):
        return {n.provider_id for n in state.live_nodes(self.db, self.c.id)}

    @property
    def cdir(self):
        return f"{NODE_ROOT}/{self.c.id}"

    def mounts(self):
        return [Mount(**m) for m in self.c.config.get("mounts", [])]

    def hosts_entries(self, extra=()):
        ents = {self.c.master["name"]: self.c.master["address"]}
        for n in list(state.live_nodes(self.db, self.c.id)) + list(extra):
            if n.name and n.address:
                ents[n.name] = n.address
        return " ".join(f"{k}={v}" for k, v in ents.items())

    # ---------------------------------------------------------------- hosts
    def install_images(self, r):
        """images/ onto a host (NODE_ROOT/CLUSTER/images), as one tarball over SFTP."""
        r.put(f"{self.cdir}/images.tgz", images.payload(self.c.scheduler), mode=0o600)
        r.run(f"mkdir -p {q(self.cdir)} && chmod 755 {q(NODE_ROOT)} {q(self.cdir)} && rm -rf {q(self.cdir + '/images')} "
              f"&& mkdir {q(self.cdir + '/images')} && tar -xzf {q(self.cdir + '/images.tgz')} -C {q(self.cdir + '/images')}"
              f" && rm {q(self.cdir + '/images.tgz')}")

    def write_hosts(self, r, extra=()):
        r.run(f"{q(self.cdir + '/images/common/hosts.sh')} /etc/hosts {q(self.hosts_entries(extra))}")

    def fstab_lines(self):
        ep = self.c.config.get("object_endpoint", "")
        return [images.fstab_line(m, ep) for m in self.mounts()]

    def bootstrap_node(self, node, extra):
        """Everything a worker needs before the scheduler: images, packages, /etc/hosts, mounts."""
        r = self.remote(node)
        self.install_images(r)
        pk = images.check_image(node.image).get("packages", [])
        if pk:
            r.run(f"{q(self.cdir + '/images/common/packages.sh')} " + " ".join(q(p) for p in pk), timeout=900)
        r.run(f"echo {q(node.image)} > {q(self.cdir + '/image')}")
        self.write_hosts(r, extra)
        mode = self.c.config.get("mount_mode", "real")
        fstab = "/etc/fstab" if mode == "real" else f"{self.cdir}/fstab"
        lines = "\n".join(self.fstab_lines())
        _, _, err = r.run(f"{q(self.cdir + '/images/common/mounts.sh')} apply --mode {q(mode)} --fstab {q(fstab)}",
                          input=lines + "\n" if lines else "")
        for line in err.strip().splitlines():
            self.log("mount", line, node.name)
        return r

    def teardown_node(self, node):
        """Stop the node's daemons (watchdog first), unmount, remove bcc's directory. Best effort when
        the host is gone (logged)."""
        try:
            r = self.remote(node)
            r.run(f"test ! -x {q(self.cdir + '/images/' + self.c.scheduler + '/bootstrap.sh')} || "
                  + self.sched.node_stop(), timeout=300)
            mode = self.c.config.get("mount_mode", "real")
            fstab = "/etc/fstab" if mode == "real" else f"{self.cdir}/fstab"
            r.run(f"test ! -x {q(self.cdir + '/images/common/mounts.sh')} || "
                  f"{q(self.cdir + '/images/common/mounts.sh')} release --mode {q(mode)} --fstab {q(fstab)}", check=False)
            r.run(f"test ! -x {q(self.cdir + '/images/common/hosts.sh')} || {q(self.cdir + '/images/common/hosts.sh')} "
                  f"/etc/hosts ''; rm -rf {q(self.cdir)}", check=False)
            return True
        except BccError as e:
            self.log("teardown", f"could not clean the host up ({e}); it is released anyway", node.name)
            return False

    # ---------------------------------------------------------------- join / remove
    def create_nodes(self, group, n, instance_type, image, disks):
        """Machines from the provider, recorded as `creating` nodes."""
        boot = {"scheduler": self.c.scheduler, "fstab": self.fstab_lines(), "node_root": NODE_ROOT,
                "hosts": [(self.c.master["name"], self.c.master["address"])] if self.c.master.get("name") else []}
        self.log("create", f"group {group}: asking the {self.c.provider} provider for {n} x {instance_type} ({image})")
        machines = self.provider.create(self.c.id, group, n, instance_type, image, disks, self.in_use(), boot=boot)
        nodes = []
        for m in machines:
            node = state.Node(cluster_id=self.c.id, group=group, name=m.name, address=m.address,
                              provider_id=m.provider_id, instance_type=instance_type, image=image, slots=m.slots,
                              state="bootstrapping")
            self.db.add(node)
            nodes.append(node)
        self.db.commit()
        for node in nodes:
            self.log("create", f"{node.provider_id} at {node.address}, {node.slots} CPU(s)", node.name)
        return nodes

    def join(self, nodes):
        """Bootstrap nodes, enter them in the scheduler, start their daemons, wait until the scheduler
        sees them. Nodes that fail are marked failed and the error raised (callers roll back)."""
        if not nodes:
            return
        errors = []

        def boot(node):
            try:
                self.bootstrap_node(node, nodes)
                return None
            except Exception as e:  # noqa: BLE001 (reported per node)
                return e
        with self.bar(len(nodes), "bootstrapping") as bar, ThreadPoolExecutor(min(8, len(nodes))) as ex:
            for node, err in zip(nodes, ex.map(boot, nodes)):
                bar.update(1)
                if err:
                    self.set_node(node, "failed", str(err))
                    self.log("bootstrap", f"failed: {err}", node.name)
                    errors.append(f"{node.name}: {err}")
                else:
                    self.log("bootstrap", "images, packages, /etc/hosts and mounts done", node.name)
        if errors:
            raise BccError("bootstrap failed on " + "; ".join(errors))
        self.write_hosts(self.master, nodes)
        for node in nodes:
            self.set_node(node, "joining")
        remotes = {n.name: self.remote(n) for n in self.members()}
        self.sched.prepare_join(nodes, self.members(), remotes)
        self.log("join", f"{self.c.scheduler}: {', '.join(n.name for n in nodes)} entered in the host lists")
        members = self.members()

        def start(node):
            try:
                remotes[node.name].run(self.sched.node_start(node, members), timeout=900)
                return None
            except Exception as e:  # noqa: BLE001
                return e
        with ThreadPoolExecutor(min(8, len(nodes))) as ex:
            for node, err in zip(nodes, ex.map(start, nodes)):
                if err:
                    self.set_node(node, "failed", str(err))
                    self.log("join", f"daemon did not start: {err}", node.name)
                    errors.append(f"{node.name}: {err}")
        if errors:
            raise BccError("joining failed on " + "; ".join(errors))
        self.wait_up(nodes)

    def wait_up(self, nodes, timeout=JOIN_TIMEOUT):
        want = {n.name for n in nodes}
        t0 = time.time()
        with self.bar(len(want), f"{self.c.scheduler}: nodes up") as bar:
            while True:
                up = self.sched.up_nodes() & want
                bar.n = len(up)
                bar.refresh()
                if up == want:
                    break
                if time.time() - t0 > timeout:
                    missing = sorted(want - up)
                    for n in nodes:
                        if n.name in missing:
                            self.set_node(n, "failed", f"not up in {self.c.scheduler} after {timeout} s")
                    raise BccError(f"{', '.join(missing)} did not come up in {self.c.scheduler} in {timeout} s: "
                                   f"see the daemon logs under {self.cdir}/{self.c.scheduler} on those hosts")
                time.sleep(1)
        for n in nodes:
            self.set_node(n, "up", "")
            self.log("up", f"up in {self.c.scheduler} ({n.slots} slot(s))", n.name)

    def remove(self, nodes, drain_timeout=None, vanished=()):
        """Drain, wait for (or requeue) running jobs, stop, forget, release. Every step logged."""
        if not nodes:
            return
        drain_timeout = self.c.config.get("drain_timeout", DRAIN_TIMEOUT) if drain_timeout is None else drain_timeout
        live = [n for n in nodes if n.state in ("joining", "up", "draining")]
        for n in live:
            self.set_node(n, "draining")
            try:
                self.sched.drain(n)
                self.log("drain", f"drained in {self.c.scheduler}: no new jobs start here", n.name)
            except BccError as e:
                self.log("drain", f"could not drain ({e})", n.name)
        t0, requeued = time.time(), False
        with self.bar(len(live), "draining") as bar:
            while live:
                busy = {n.name: self.sched.jobs_on(n) for n in live}
                bar.n = sum(1 for v in busy.values() if not v)
                bar.refresh()
                if not any(busy.values()):
                    break
                gone = [n for n in live if n.name in vanished and busy[n.name]]
                if (time.time() - t0 > drain_timeout or gone) and not requeued:
                    for n in live:
                        if busy[n.name] and (n.name in vanished or time.time() - t0 > drain_timeout):
                            # logged as what the scheduler took back: a job that ended between the
                            # look and the requeue was not requeued, and is not said to be
                            got = self.sched.requeue(busy[n.name]) or []
                            ended = [j for j in busy[n.name] if j not in got]
                            if got:
                                self.log("requeue", f"requeued {', '.join(got)} (still running after "
                                                    f"{int(time.time() - t0)} s)" if n.name not in vanished else
                                         f"host vanished: requeued {', '.join(got)}", n.name)
                            if ended:
                                self.log("drain", f"{', '.join(ended)} ended before they could be requeued", n.name)
                    requeued = True
                if time.time() - t0 > drain_timeout + 120:
                    raise BccError(f"jobs {busy} are still on the draining nodes {drain_timeout + 120} s later: "
                                   "nothing was removed; check them with qstat/squeue and run the command again")
                time.sleep(2)
        for n in live:
            self.log("drain", "no jobs left", n.name)
        for n in nodes:
            self.set_node(n, "removing")
            if n.name not in vanished:
                self.teardown_node(n)
                self.log("stop", "daemons and watchdog stopped, mounts released", n.name)
        remaining = [m for m in self.members() if m not in nodes]
        remotes = {m.name: self.remote(m) for m in remaining}
        self.sched.forget(nodes, remaining, remotes)
        self.log("forget", f"{self.c.scheduler}: {', '.join(n.name for n in nodes)} out of the host lists")
        self.provider.destroy(self.c.id, [self.machine(n) for n in nodes])
        for n in nodes:
            self.set_node(n, "gone")
            self.log("release", f"released to the {self.c.provider} provider", n.name)
        self.write_hosts(self.master)

    # ---------------------------------------------------------------- commands
    def groups(self):
        return {g.name: g for g in self.db.scalars(select(state.Group).where(state.Group.cluster_id == self.c.id))}

    def group(self, name):
        g = self.groups().get(name)
        if g is None:
            raise BadInput(f"cluster {self.c.id} has no group '{name}': its groups are "
                           f"{', '.join(sorted(self.groups())) or 'none'}")
        return g

    def grow(self, g, n, instance_type=None, image=None):
        nodes = self.create_nodes(g.name, n, instance_type or g.instance_type, image or g.image,
                                  [state_disk(d) for d in g.disks])
        try:
            self.join(nodes)
        except Exception:
            self.log("rollback", f"taking the {len(nodes)} new node(s) out again")
            self.remove(nodes, drain_timeout=30)
            raise
        return nodes

    def resize(self, group, size):
        g = self.group(group)
        if size < 0 or size > 1000:
            raise BadInput(f"size {size} is out of range (0-1000)")
        nodes = [n for n in state.live_nodes(self.db, self.c.id, group)]
        if self.c.scheduler == "slurm" and size == 0 and len(self.members()) == len(nodes):
            raise BadInput("a Slurm cluster needs at least one node: resize to 1 or more, or `bcc stop`")
        self.log("resize", f"group {group}: {len(nodes)} -> {size} node(s)")
        g.size = size
        self.db.commit()
        if size > len(nodes):
            self.grow(g, size - len(nodes))
        elif size < len(nodes):
            # the newest go first (the oldest have the warmest caches)
            self.remove(sorted(nodes, key=lambda n: n.id)[size:])
        return self.summary()

    def update(self, group, instance_type=None, image=None):
        g = self.group(group)
        if not instance_type and not image:
            raise BadInput("bcc update: give -t TYPE or -i IMAGE (or both)")
        new_type, new_image = instance_type or g.instance_type, image or g.image
        self.provider.check(new_type, new_image, [state_disk(d) for d in g.disks])
        old = [n for n in state.live_nodes(self.db, self.c.id, group)]
        self.log("update", f"group {group}: rolling {len(old)} node(s) to {new_type} / {new_image}: new nodes join first")
        g.instance_type, g.image = new_type, new_image
        self.db.commit()
        if old:
            self.grow(g, len(old), new_type, new_image)
            self.remove(old)
        return self.summary()

    def stop(self, force=False):
        jobs = []
        try:
            jobs = self.sched.jobs()
        except BccError as e:
            self.log("stop", f"cannot ask {self.c.scheduler} for jobs ({e}): going on")
        if jobs and not force:
            raise BccError(f"{len(jobs)} job(s) are queued or running on cluster {self.c.id} ({', '.join(jobs[:5])}"
                           f"{'...' if len(jobs) > 5 else ''}): wait for them, cancel them, or pass --force "
                           "(drains the nodes and cancels the jobs)")
        self.c.state = "stopping"
        self.db.commit()
        if jobs:
            self.log("stop", f"--force: cancelling {len(jobs)} job(s)")
            self.sched.cancel_all()
        nodes = state.live_nodes(self.db, self.c.id)
        if nodes:
            self._remove_all(nodes)
        self.stop_master()
        self.provider.cleanup(self.c.id)
        self.c.state = "stopped"
        self.db.commit()
        self.log("stop", "cluster stopped: every worker released, the master's daemons stopped")
        return self.summary()

    def _remove_all(self, nodes):
        """All nodes out: drain them, then stop each node (the scheduler's lists go with the master)."""
        for n in nodes:
            if n.state in ("up", "draining", "joining"):
                try:
                    self.sched.drain(n)
                    self.set_node(n, "draining")
                    self.log("drain", "drained", n.name)
                except BccError as e:
                    self.log("drain", f"could not drain ({e})", n.name)
        t0 = time.time()
        while time.time() - t0 < 120:
            if not any(self.sched.jobs_on(n) for n in nodes):
                break
            time.sleep(2)
        with ThreadPoolExecutor(min(8, len(nodes))) as ex:
            list(ex.map(self.teardown_node, nodes))
        self.provider.destroy(self.c.id, [self.machine(n) for n in nodes])
        for n in nodes:
            self.set_node(n, "gone")
            self.log("release", "stopped and released", n.name)

    def stop_master(self):
        try:
            self.sched.stop_master()
            self.master.run(f"{q(self.cdir + '/images/common/hosts.sh')} /etc/hosts ''; rm -rf {q(self.cdir)}",
                            check=False)
            self.log("stop", f"{self.c.scheduler} master daemons stopped on {self.c.master.get('name')}")
        except BccError as e:
            self.log("stop", f"could not stop the master's daemons: {e}")
            raise

    def reconcile(self):
        """Bring the scheduler in step with the provider: a node the provider no longer has (or cannot
        reach) is drained and its jobs requeued before it is removed; a node up in bcc but missing in
        the scheduler is joined again."""
        have = {m.provider_id: m for m in self.provider.describe(self.c.id)}
        nodes = [n for n in state.live_nodes(self.db, self.c.id) if n.state == "up"]
        vanished = [n for n in nodes if n.provider_id not in have or have[n.provider_id].state in ("gone", "unreachable")]
        if vanished:
            self.log("reconcile", f"vanished: {', '.join(n.name for n in vanished)}: draining, requeueing, removing")
            self.remove(vanished, drain_timeout=0, vanished={n.name for n in vanished})
            for n in vanished:
                g = self.group(n.group)
                self.log("reconcile", f"group {g.name} is now {len(state.live_nodes(self.db, self.c.id, g.name))} "
                                      f"of {g.size} wanted: `bcc resize {g.name} {g.size}` replaces it")
        up = self.sched.up_nodes()
        down = [n for n in nodes if n not in vanished and n.name not in up]
        for n in down:
            self.log("reconcile", f"up in bcc but not in {self.c.scheduler}: its watchdog restarts the daemons", n.name)
        return {"vanished": [n.name for n in vanished], "not_in_scheduler": [n.name for n in down]}

    # ---------------------------------------------------------------- views
    def summary(self, events=20, scheduler_view=True):
        groups = []
        for g in self.groups().values():
            nodes = [state.as_dict(n) for n in self.db.scalars(
                select(state.Node).where(state.Node.cluster_id == self.c.id, state.Node.group == g.name)
                .order_by(state.Node.id))]
            groups.append({"name": g.name, "instance_type": g.instance_type, "image": g.image, "size": g.size,
                           "nodes": [n for n in nodes if n["state"] in state.LIVE_STATES],
                           "past_nodes": len([n for n in nodes if n["state"] not in state.LIVE_STATES])})
        evs = list(self.db.scalars(select(state.Event).where(state.Event.cluster_id == self.c.id)
                                   .order_by(state.Event.id.desc()).limit(events)))[::-1]
        out = {"cluster": {k: v for k, v in state.as_dict(self.c).items() if k != "config"},
               "mounts": [m.uri + ":" + m.dst for m in self.mounts()],
               "groups": sorted(groups, key=lambda g: (g["name"] != "default", g["name"])),
               "events": [{"at": state.as_dict(e)["at"], "node": e.node, "step": e.step, "message": e.message}
                          for e in evs]}
        if scheduler_view and self.c.state in ("running", "starting", "stopping"):
            try:
                out["scheduler_view"] = self.sched.view()
                out["scheduler_up"] = sorted(self.sched.up_nodes())
            except BccError as e:
                out["scheduler_view"] = f"(cannot ask {self.c.scheduler}: {e})"
        return out


def state_disk(d):
    from bcc.specs import Disk
    return Disk(d["kind"], d["size_gb"])


def start(opts, talk, progress=True, base=None):
    """bcc start. opts: provider, scheduler, n, instance_type, image, cidr, mounts ([Mount]), disks ([Disk]),
    group_num, provider_config (dict), ports, mount_mode, drain_timeout, watchdog_seconds, requeue_delay."""
    base = base or state.home()
    if opts["scheduler"] not in ("sge", "slurm"):
        raise BadInput(f"unknown scheduler '{opts['scheduler']}': use sge or slurm")
    if not 1 <= opts["n"] <= 1000:
        raise BadInput(f"-n {opts['n']}: give 1 to 1000 nodes per group")
    if not 1 <= opts["group_num"] <= 20:
        raise BadInput(f"--group_num {opts['group_num']}: give 1 to 20 groups")
    if not 5 <= opts.get("requeue_delay", 120) <= 3600:
        raise BadInput(f"--requeue-delay {opts['requeue_delay']}: give 5 to 3600 seconds")
    config = {"node_root": NODE_ROOT, "ports": opts["ports"], "mounts": [m.__dict__ for m in opts["mounts"]],
              "mount_mode": opts.get("mount_mode", "real"), "drain_timeout": opts.get("drain_timeout", DRAIN_TIMEOUT),
              "watchdog_seconds": opts.get("watchdog_seconds", 5), "object_endpoint": opts.get("object_endpoint", ""),
              "requeue_delay": opts.get("requeue_delay", 120),
              **opts["provider_config"]}
    prov = providers.get(opts["provider"], dict(config, bcc_home=base), talk)
    prov.check(opts["instance_type"], opts["image"], opts["disks"])
    # the master: reach it and check the CIDR against its network before anything is made
    spec = config.get("ssh", {}).get("master", "local")
    # the master's address on the workers' network: given, or the one bcc reaches it at
    addr = config.get("ssh", {}).get("master_address") or (spec.split("@")[-1].split(":")[0] if spec != "local" else "")
    if not addr:
        raise BadInput("with --master local, give the master's address on the workers' network: --master-address ADDR")
    if opts["provider"] == "ssh":
        m = prov.master_remote()
        _, hn, _ = m.run("hostname")
        net = prov.master_network(m, addr)
        master_info = {"name": hn.strip(), "address": addr, "network": str(net)}
        prov.close()
    else:
        net = prov.master_network()
        master_info = {"name": "", "address": addr, "network": str(net)}
        if not __import__("ipaddress").IPv4Address(addr) in net:
            raise BadInput(f"the master's address {addr} is not in its VPC {net}: give its private address "
                           "with --master-address")
    cidr = parse_cidr(opts["cidr"], net) if opts.get("cidr") else net
    config["cidr"] = str(cidr)
    if opts["provider"] == "aws":
        config["aws"]["cidr"] = str(cidr)
    if opts["provider"] == "ssh":
        outside = [h for h in config["ssh"]["hosts"] if not __import__("ipaddress").IPv4Address(
            h.split("@")[-1].split(":")[0]) in cidr]
        if outside:
            raise BadInput(f"hosts {', '.join(outside)} are outside --vpc_cidr_block {cidr}: give a block that holds "
                           "them, or leave them out of --hosts")
    Session = state.sessions(base)
    cid = "c-" + secrets.token_hex(4)
    with Session() as db:
        db.add(state.Cluster(id=cid, provider=opts["provider"], scheduler=opts["scheduler"], state="starting",
                             master=master_info, config=config))
        for gname in group_names(opts["group_num"]):
            db.add(state.Group(cluster_id=cid, name=gname, instance_type=opts["instance_type"], image=opts["image"],
                               size=opts["n"], disks=[d.__dict__ for d in opts["disks"]]))
        db.commit()
        state.log_event(db, cid, "start", f"cluster {cid}: {opts['group_num']} group(s) of {opts['n']} x "
                                          f"{opts['instance_type']} ({opts['image']}), {opts['scheduler']}, "
                                          f"provider {opts['provider']}")
    talk(f"bcc: cluster {cid}: starting")
    ops = Ops(cid, talk, progress, base)
    made = []
    try:
        for g in group_names(opts["group_num"]):
            made += ops.create_nodes(g, opts["n"], opts["instance_type"], opts["image"], opts["disks"])
        master = ops.master
        if opts["provider"] != "ssh":
            _, hn, _ = master.run("hostname")
            info = dict(ops.c.master, name=ops.c.master.get("name") or hn.strip())
            ops.c.master = info
            ops.db.commit()
        ops.install_images(master)
        ops.write_hosts(master, made)
        ops.log("master", f"starting the {opts['scheduler']} master on {ops.c.master['name']}")
        ops.sched.start_master(made)
        ops.log("master", f"{opts['scheduler']} master up on {ops.c.master['name']} ({ops.c.master['address']})")
        ops.save_config(ops.sched.client_env(), "client_env")      # what bcc.api gives the master and web UI
        ops.join(made)
        ops.c.state = "running"
        ops.db.commit()
        state.set_current(cid, base)
        ops.log("start", f"cluster {cid} running: {len(made)} node(s)")
        return ops.summary()
    except BaseException as e:
        ops.log("rollback", f"start failed ({e}): rolling back, releasing what was made")
        try:
            rollback(ops, made)
        except Exception as e2:  # noqa: BLE001
            ops.log("rollback", f"rollback incomplete: {e2}: see `bcc status {cid}`")
        ops.c.state = "failed"
        ops.db.commit()
        raise
    finally:
        ops.close()


def rollback(ops, made):
    live = [n for n in made if n.state != "gone"]
    if live:
        for n in live:
            if n.state in ("joining", "up", "failed", "draining") and ops._master is not None:
                ops.teardown_node(n)
        try:
            ops.provider.destroy(ops.c.id, [ops.machine(n) for n in live])
        finally:
            for n in live:
                ops.set_node(n, "gone")
                ops.log("rollback", "released", n.name)
    if ops._master is not None:
        try:
            ops.stop_master()
        except BccError:
            pass
    ops.provider.cleanup(ops.c.id)
