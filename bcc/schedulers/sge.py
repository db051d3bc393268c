"""SGE: group membership -> exec hosts, admin/submit hosts, a hostgroup per group (@gf_GROUP),
all of them in @genefarm, which the queue runs on. A node leaves drained: its queue instance
disabled (qmod -d), its running jobs waited for, or suspended and rescheduled (qmod -sj, then
qmod -f -rj), then its execd stopped (and what still runs under it killed) and the host taken
out of every list."""
from bcc import images
from bcc.schedulers.base import Scheduler, q

QUEUE = "genefarm.q"
ALL = "@genefarm"


def hostgroup(group):
    return f"@gf_{group}"


class SGE(Scheduler):
    name = "sge"
    env_file = "sge.env"

    @property
    def cell(self):
        return "gf" + self.cid.replace("c-", "")

    def _common(self):
        return (f"--cell {q(self.cell)} --state {q(self.state)} --master {q(self.mname)} "
                f"--qmaster-port {int(self.ports[0])} --execd-port {int(self.ports[1])} --queue {QUEUE}")

    def start_master(self, nodes):
        self.master.run(f"{q(self.images + '/sge/bootstrap.sh')} start --role master --host {q(self.mname)} "
                        f"{self._common()} --hostgroup {ALL} --slots 1024 --watchdog {int(self.watchdog)}", timeout=900)

    def stop_master(self):
        self.master.run(f"{q(self.images + '/sge/bootstrap.sh')} stop --state {q(self.state)} --cell {q(self.cell)}",
                        timeout=300)

    def _ensure_group(self, group):
        hg = hostgroup(group)
        rc, _, _ = self.sh(f"qconf -shgrp {hg}", check=False)
        if rc != 0:
            text = images.render("sge/hostgroup.tmpl", HOSTGROUP=hg, MEMBERS="NONE")
            self.master.put(f"{self.state}/hgrp.{group}", text.encode())
            self.sh(f"qconf -Ahgrp {q(self.state + '/hgrp.' + group)}")
        rc, out, _ = self.sh(f"qconf -shgrp {ALL}")
        if hg not in out.split():
            self.sh(f"qconf -aattr hostgroup hostlist {hg} {ALL}")

    def prepare_join(self, new, members, remotes):
        for group in sorted({n.group for n in new}):
            self._ensure_group(group)
        for n in new:
            self.sh(f"qconf -ah {q(n.name)} >/dev/null 2>&1; qconf -as {q(n.name)} >/dev/null 2>&1; true")
            text = images.render("sge/exechost.tmpl", HOST=n.name, COMPLEX=f"slots={int(n.slots)}")
            f = f"{self.state}/exechost.{n.name}"
            self.master.put(f, text.encode())
            self.sh(f"qconf -Ae {q(f)} >/dev/null 2>&1 || qconf -Me {q(f)}")
            rc, out, _ = self.sh(f"qconf -shgrp {hostgroup(n.group)}")
            if n.name not in out.split():
                self.sh(f"qconf -aattr hostgroup hostlist {q(n.name)} {hostgroup(n.group)}")

    def node_start(self, node, members):
        return (f"{q(self.images + '/sge/bootstrap.sh')} start --role exec --host {q(node.name)} {self._common()} "
                f"--slots {int(node.slots)} --watchdog {int(self.watchdog)}")

    def node_stop(self):
        # with the cell: an exec host that made the cell's common directory itself removes it again
        return f"{super().node_stop()} --cell {q(self.cell)}"

    def drain(self, node):
        self.sh(f"qmod -d {QUEUE}@{q(node.name)}")

    def _running(self):
        """[(job id with task, host)] of running (or suspended) jobs."""
        rc, out, _ = self.sh("qstat -u '*' -s rs", check=False)
        jobs = []
        for line in out.splitlines()[2:]:
            f = line.split()
            if len(f) < 9 or not f[0].isdigit():
                continue
            queue = next((x for x in f if x.startswith(QUEUE + "@")), "")
            task = f[9] if len(f) >= 10 else ""          # ja-task-ID, for array jobs
            jobs.append((f[0] + (f".{task}" if task else ""), queue.partition("@")[2]))
        return jobs

    def jobs_on(self, node):
        return [j for j, host in self._running() if host == node.name]

    def requeue(self, jobs):
        # SGE's reschedule puts the task back in the queue but does not stop the running copy (seen
        # on 8.1.9: it runs on to its end while the task runs again elsewhere); suspended first, the
        # old copy does nothing meanwhile, and the node's stop (bootstrap.sh stop) kills it. The
        # reschedule is asked for even when the suspend fails (a vanished host cannot be signalled)
        # Returns the jobs SGE took back: one that ended meanwhile "does not exist" and is not counted
        done = []
        for j in jobs:
            rc, out, err = self.sh(f"qmod -sj {q(j)} >/dev/null 2>&1; qmod -f -rj {q(j)}", check=False)
            if rc == 0 and "does not exist" not in out + err:
                done.append(j)
        return done

    def forget(self, nodes, members, remotes):
        for n in nodes:
            self.sh(f"qconf -dattr hostgroup hostlist {q(n.name)} {hostgroup(n.group)} >/dev/null 2>&1; "
                    f"qconf -de {q(n.name)} >/dev/null 2>&1; qconf -dh {q(n.name)} >/dev/null 2>&1; "
                    f"qconf -ds {q(n.name)} >/dev/null 2>&1; true")

    def up_nodes(self):
        """Names of exec hosts whose execd reports to the qmaster (qhost shows their load)."""
        rc, out, _ = self.sh("qhost", check=False)
        up = set()
        for line in out.splitlines()[3:]:
            f = line.split()
            if len(f) >= 4 and f[1] != "-" and f[3] != "-":
                up.add(f[0])
        # qhost keeps the last load for a while after an execd dies: ask the queue instances too
        rc, out, _ = self.sh(f"qstat -f -q {QUEUE} -u '*'", check=False)
        for line in out.splitlines():
            f = line.split()
            if f and f[0].startswith(QUEUE + "@") and len(f) >= 6 and "u" in f[5]:     # states: u = unknown
                up.discard(f[0].partition("@")[2])
        return up

    def view(self):
        return self.sh("qhost", check=False)[1]

    def jobs(self):
        rc, out, _ = self.sh("qstat -u '*'", check=False)
        return [ln.split()[0] for ln in out.splitlines()[2:] if ln.split() and ln.split()[0].isdigit()]

    def cancel_all(self):
        ids = sorted(set(self.jobs()))
        if ids:
            self.sh("qdel -f " + " ".join(q(i) for i in ids), check=False)
