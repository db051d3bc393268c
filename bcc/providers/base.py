"""The provider interface: three verbs (create / describe / destroy) plus what bcc needs to check
input before anything is made and to reach the machines."""
from dataclasses import dataclass


@dataclass
class Machine:
    """A worker machine as the provider sees it."""
    provider_id: str       # ssh: the host's name; aws: the instance id
    name: str              # the host name the scheduler will know it by
    address: str           # address the master reaches it at
    slots: int             # CPUs given to the scheduler
    state: str = "running"  # running | pending | gone | unreachable


class Provider:
    name = ""
    default_disk = ""

    def __init__(self, config, talk):
        self.config, self.talk = config, talk

    # --- what exists
    def types(self):
        """[{name, cpus, memory_gb, note}] (`bcc type`)."""
        raise NotImplementedError

    def disk_types(self):
        """[{name, note}] (`bcc disk`)."""
        raise NotImplementedError

    # --- checks before anything is made (raise BadInput)
    def check(self, instance_type, image, disks):
        raise NotImplementedError

    def master_network(self, master):
        """The master's network (ipaddress.IPv4Network): worker addresses must be inside it."""
        raise NotImplementedError

    def master_remote(self):
        """A Remote on the master."""
        raise NotImplementedError

    # --- the three verbs
    def create(self, cluster_id, group, n, instance_type, image, disks, in_use):
        """Make (or claim) n machines for group; [Machine]. On failure, release what it made and raise."""
        raise NotImplementedError

    def describe(self, cluster_id):
        """[Machine] the provider has for the cluster, with their state."""
        raise NotImplementedError

    def destroy(self, cluster_id, machines):
        """Release machines (terminate instances, free pool hosts)."""
        raise NotImplementedError

    def remote(self, machine):
        """A Remote on a worker machine."""
        raise NotImplementedError

    def cleanup(self, cluster_id):
        """Remove what the provider made for the cluster itself (subnet, ...) after the last node."""
