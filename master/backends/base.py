"""The scheduler interface: three verbs, arrays not single jobs, one state enum.

    submit(spec: ArraySpec) -> [job id of element 1, ..., element N]
    status(ids) -> {id: JobStatus}     every id gets an answer (UNKNOWN when the scheduler does not say)
    cancel(ids)

ArraySpec (one array job: N elements running the same command; element i reads its task from
manifest/<i>.json, the index coming from the scheduler's environment):
    name        unique name of the array (the job name; logs are log_dir/<name>.<i>.log)
    count       N
    argv        the command every element runs
    manifest    the directory of the task messages
    log_dir     where each element's stdout+stderr goes
    cpus        cores per rank (threads); an element takes cpus * ranks cores
    ranks       MPI ranks per element (>1: SGE parallel environment / Slurm --ntasks)
    memory_mb   memory per rank: what the task's own processes hold (0: the scheduler's default)
    vmem_mb     virtual memory per rank (the memory, the files it maps: the index, and room for the
                interpreter's reservations), for schedulers that limit address space (SGE h_vmem)
    env         environment variables to set for the elements

JobStatus: state (master.states.JobState), exit_code, signal, node, cpu_seconds, peak_mb, and
`raw` (the scheduler's own word for the state, kept for `explain`).
"""
import os
from dataclasses import dataclass, field

from master.states import JobState


@dataclass
class ArraySpec:
    name: str
    count: int
    argv: list
    manifest: str
    log_dir: str
    cpus: int = 1
    ranks: int = 1
    memory_mb: int = 0
    vmem_mb: int = 0
    env: dict = field(default_factory=dict)

    def log_path(self, i):
        return os.path.join(self.log_dir, f"{self.name}.{i}.log")


@dataclass
class JobStatus:
    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    node: str = ""
    cpu_seconds: float | None = None
    peak_mb: float | None = None
    raw: str = ""


class BackendError(Exception):
    """The scheduler refused or could not be reached (the master retries later; a submission
    that failed leaves its tasks ready)."""


class Backend:
    name = "?"

    def submit(self, spec):
        raise NotImplementedError

    def status(self, ids):
        raise NotImplementedError

    def cancel(self, ids):
        raise NotImplementedError

    def close(self):
        pass


def signal_of_exit(code):
    """Schedulers report a job killed by signal s as exit code 128+s."""
    if code is not None and 128 < code < 160:
        return code - 128
    return None
