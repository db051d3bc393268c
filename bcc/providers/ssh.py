"""ssh: hosts you already have. The cluster's pool is the --hosts list; create claims free hosts
from it (reached with paramiko, host keys verified, see bcc.remote), destroy gives them back.

Instance types say how many CPUs a host gives the scheduler; images are the names in
images/catalog.json (extra packages installed on top of the scheduler's)."""
import ipaddress
import threading

from bcc import images, remote
from bcc.errors import BadInput, BccError
from bcc.providers.base import Machine, Provider
from bcc.specs import parse_host

TYPES = {"host": None, "cpu1": 1, "cpu2": 2, "cpu4": 4, "cpu8": 8, "cpu16": 16}


class SSHProvider(Provider):
    name = "ssh"
    default_disk = "local"

    def __init__(self, config, talk):
        super().__init__(config, talk)
        c = config.get("ssh", {})
        self.pool = [parse_host(h) for h in c.get("hosts", [])]
        self.master_spec = c.get("master", "local")
        self.identity = c.get("identity")
        self.host_keys = c.get("host_keys", {})
        self.trust_new = c.get("trust_new", False)
        self.base = config.get("bcc_home")
        self._remotes = {}
        self._lock = threading.Lock()

    def types(self):
        return [{"name": k, "cpus": v or "all of the host's", "memory_gb": "the host's",
                 "note": "CPUs the scheduler may use on a host you already have"} for k, v in TYPES.items()]

    def disk_types(self):
        return [{"name": "local", "note": "the host's own disks: the ssh provider attaches none (leave -d out)"}]

    def check(self, instance_type, image, disks):
        if instance_type not in TYPES:
            raise BadInput(f"unknown instance type '{instance_type}' for the ssh provider: use one of "
                           f"{', '.join(TYPES)} (see `bcc type --provider ssh`)")
        images.check_image(image)
        if disks:
            raise BadInput("the ssh provider cannot attach disks to hosts you already have: leave -d out")
        if not self.pool:
            raise BadInput("the ssh provider needs hosts: give --hosts NAME=USER@ADDRESS[:PORT],...")

    def _connect(self, spec):
        key = spec.name or spec.address
        with self._lock:
            r = self._remotes.get(key)
        if r is None:
            r = remote.connect(spec, self.identity, self.host_keys, self.trust_new, self.talk, base=self.base)
            with self._lock:
                self._remotes[key] = r
        return r

    def master_remote(self):
        if self.master_spec == "local":
            import socket
            return remote.LocalRemote(socket.gethostname())
        return self._connect(parse_host(self.master_spec))

    def master_network(self, master, address):
        rc, out, _ = master.run("ip -o -4 addr show", check=False)
        for line in out.splitlines():
            f = line.split()
            if "inet" in f:
                iface = ipaddress.IPv4Interface(f[f.index("inet") + 1])
                if str(iface.ip) == address:
                    return iface.network
        raise BccError(f"the master's address {address} is not on any of its interfaces ({out.strip()[:300]}): "
                       "give the master's own address in --master")

    def create(self, cluster_id, group, n, instance_type, image, disks, in_use, boot=None):
        free = [h for h in self.pool if (h.name or h.address) not in in_use]
        if len(free) < n:
            raise BadInput(f"group {group} needs {n} more host(s) but only {len(free)} of the {len(self.pool)} in the "
                           "pool are free: add hosts to --hosts, or ask for fewer")
        out = []
        for spec in free[:n]:
            r = self._connect(spec)
            _, text, _ = r.run("hostname; nproc")
            hostname, nproc = text.split()[:2]
            if spec.name and hostname != spec.name:
                raise BccError(f"{spec} calls itself '{hostname}', not '{spec.name}': the scheduler needs the host's "
                               f"own name; use {hostname}={spec.user}@{spec.address}:{spec.port} in --hosts")
            slots = TYPES[instance_type] or int(nproc)
            out.append(Machine(provider_id=hostname, name=hostname, address=spec.address, slots=slots))
        return out

    def describe(self, cluster_id):
        res = []
        for spec in self.pool:
            try:
                r = self._connect(spec)
                r.run("true", timeout=20)
                res.append(Machine(spec.name or spec.address, spec.name or spec.address, spec.address, 0, "running"))
            except BccError:
                with self._lock:
                    self._remotes.pop(spec.name or spec.address, None)
                res.append(Machine(spec.name or spec.address, spec.name or spec.address, spec.address, 0, "unreachable"))
        return res

    def destroy(self, cluster_id, machines):
        for m in machines:              # hosts you already have are given back, not destroyed
            with self._lock:
                r = self._remotes.pop(m.provider_id, None)
            if r:
                r.close()

    def remote(self, machine):
        spec = next((h for h in self.pool if (h.name or h.address) in (machine.provider_id, machine.name)), None)
        if spec is None:
            raise BccError(f"{machine.name} is not in this cluster's host pool")
        return self._connect(spec)

    def close(self):
        for r in list(self._remotes.values()):
            r.close()
        self._remotes.clear()
