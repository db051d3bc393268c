"""Slurm: group membership -> NodeName lines in slurm.conf on every host, then `reload` (the
controller restarts when the node set changed: Slurm 22.05 cannot add nodes otherwise; its
saved state keeps every job) and `scontrol reconfigure`. A node leaves drained: State=DRAIN,
its running jobs waited for or requeued (scontrol requeue), then its slurmd stopped, and only
then is it taken out of slurm.conf."""
from concurrent.futures import ThreadPoolExecutor

from bcc.errors import BadInput
from bcc.schedulers.base import Scheduler, q

PARTITION = "genefarm"


class Slurm(Scheduler):
    name = "slurm"
    env_file = "slurm.env"

    @property
    def cluster_name(self):
        return "gf" + self.cid.replace("c-", "")[:10]

    def _nodes_arg(self, members):
        return " ".join(f"{n.name}={n.address}:{int(n.slots)}" for n in sorted(members, key=lambda n: n.name))

    def _args(self, role, host, addr, members):
        return (f"--role {role} --host {q(host)} --addr {q(addr)} --controller {q(self.mname)} "
                f"--controller-addr {q(self.maddr)} --nodes {q(self._nodes_arg(members))} "
                f"--cluster {q(self.cluster_name)} --partition {PARTITION} --ctld-port {int(self.ports[0])} "
                f"--slurmd-port {int(self.ports[1])} --state {q(self.state)} --watchdog {int(self.watchdog)} "
                f"--cred-expire {int(self.cluster.config.get('requeue_delay', 120))}")

    def _script(self):
        return q(self.images + "/slurm/bootstrap.sh")

    def start_master(self, nodes):
        if not nodes:
            raise BadInput("a Slurm cluster needs at least one node: give -n 1 or more")
        self.master.run(f"{self._script()} start {self._args('controller', self.mname, self.maddr, nodes)}",
                        timeout=900)

    def stop_master(self):
        self.master.run(f"{self._script()} stop --state {q(self.state)}", timeout=300)

    def _configure_all(self, members, remotes, new=()):
        """slurm.conf with `members` on the master and every member (new ones get the munge key first)."""
        if not members:
            raise BadInput("a Slurm cluster needs at least one node: use `bcc stop` to release them all")
        self.master.run(f"{self._script()} configure {self._args('controller', self.mname, self.maddr, members)}")
        key = self.master.get(f"{self.state}/munge-key/munge.key") if new else None

        def conf(n):
            r = remotes[n.name]
            if n in new:
                r.run(f"mkdir -p {q(self.state + '/munge-key')} && chmod 700 {q(self.state + '/munge-key')}")
                r.put(f"{self.state}/munge-key/munge.key", key, mode=0o400)
            r.run(f"{self._script()} configure {self._args('node', n.name, n.address, members)}")
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(conf, members))
        self.master.run(f"{self._script()} reload --state {q(self.state)}", timeout=300)

    def prepare_join(self, new, members, remotes):
        self._configure_all(members, remotes, new=new)

    def node_start(self, node, members):
        return f"{self._script()} start {self._args('node', node.name, node.address, members)}"

    def drain(self, node):
        self.sh(f"scontrol update NodeName={q(node.name)} State=DRAIN Reason={q('bcc: removing ' + node.name)}")

    def jobs_on(self, node):
        rc, out, _ = self.sh(f"squeue -h -w {q(node.name)} -t R,CG,S -o %i", check=False)
        return [x.strip() for x in out.split() if x.strip()]

    def requeue(self, jobs):
        """The jobs Slurm took back (one that ended meanwhile is refused, and not counted)."""
        return [j for j in jobs if self.sh(f"scontrol requeue {q(j)}", check=False)[0] == 0]

    def forget(self, nodes, members, remotes):
        if members:
            self._configure_all(members, remotes)

    def up_nodes(self):
        rc, out, _ = self.sh("sinfo -h -N -o '%N %t'", check=False)
        up = set()
        for line in out.splitlines():
            f = line.split()
            if len(f) == 2 and f[1].rstrip("*~#!%$@^-") in ("idle", "mix", "alloc", "comp", "drain", "drng"):
                if not f[1].endswith("*"):       # '*': not responding
                    up.add(f[0])
        return up

    def view(self):
        return self.sh("sinfo -N -o '%12N %10t %5c %8m %P'", check=False)[1]

    def jobs(self):
        rc, out, _ = self.sh("squeue -h -o %i", check=False)
        return [x for x in out.split() if x]

    def cancel_all(self):
        ids = sorted(set(self.jobs()))
        if ids:
            self.sh("scancel " + " ".join(q(i) for i in ids), check=False)
