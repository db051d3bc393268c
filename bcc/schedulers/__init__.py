"""The reconciler's two halves: how bcc keeps SGE's and Slurm's host lists in step with a group."""


def get(name, cluster, master, talk):
    if name == "sge":
        from bcc.schedulers.sge import SGE
        return SGE(cluster, master, talk)
    if name == "slurm":
        from bcc.schedulers.slurm import Slurm
        return Slurm(cluster, master, talk)
    from bcc.errors import BadInput
    raise BadInput(f"unknown scheduler '{name}': use sge or slurm")
