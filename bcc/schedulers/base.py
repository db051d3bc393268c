"""What a scheduler must do for bcc. Commands run on the master (a Remote) through one method."""
import shlex

from bcc.errors import BccError


def q(s):
    return shlex.quote(str(s))


class Scheduler:
    name = ""
    env_file = ""          # the settings file the bootstrap writes in the state directory

    def __init__(self, cluster, master, talk):
        self.cluster, self.master, self.talk = cluster, master, talk
        cfg = cluster.config
        self.cid = cluster.id
        self.node_root = cfg["node_root"]
        self.images = f"{self.node_root}/{self.cid}/images"
        self.state = f"{self.node_root}/{self.cid}/{self.name}"
        self.ports = cfg["ports"]
        self.watchdog = cfg.get("watchdog_seconds", 5)
        self.mname, self.maddr = cluster.master["name"], cluster.master["address"]

    def sh(self, cmd, timeout=300, check=True):
        """Run a client command on the master with the cluster's settings sourced."""
        return self.master.run(f". {q(self.state + '/' + self.env_file)} && {cmd}", timeout=timeout, check=check)

    # --- to implement
    def start_master(self, nodes): raise NotImplementedError
    def stop_master(self): raise NotImplementedError
    def prepare_join(self, new, members, remotes): raise NotImplementedError
    def node_start(self, node, members): raise NotImplementedError
    def node_stop(self): return f"{q(self.images + '/' + self.name + '/bootstrap.sh')} stop --state {q(self.state)}"
    def drain(self, node): raise NotImplementedError
    def jobs_on(self, node): raise NotImplementedError
    def requeue(self, jobs): raise NotImplementedError          # -> the jobs actually requeued
    def forget(self, nodes, members, remotes): raise NotImplementedError
    def up_nodes(self): raise NotImplementedError
    def view(self): raise NotImplementedError
    def jobs(self): raise NotImplementedError
    def cancel_all(self): raise NotImplementedError

    def client_env(self):
        """Settings a client on the master needs (the master's backends read these)."""
        rc, out, _ = self.master.run(f"cat {q(self.state + '/' + self.env_file)}", check=False)
        env = {}
        for line in out.splitlines():
            if line.startswith("export "):
                k, _, v = line[7:].partition("=")
                env[k.strip()] = v.strip()
        return env


def must(ok, msg):
    if not ok:
        raise BccError(msg)
