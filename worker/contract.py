"""The task contract, defined once: the stages, how a task can end (outcomes and exit codes), the
names of the files tasks hand each other, and the worker's report. The master imports it from
here; nothing else spells these out (the task message itself is worker/message.py).

Exit codes (DESIGN.md): 0 done; 2 bad input (no retry, a clear message); 75 temporary (retry);
1 failed otherwise (retry up to the limit); 143 preempted (SIGTERM: requeued without spending a
retry). A kernel's own exit codes are kernels.errors' (2 and 75), read here as outcomes.
"""
import enum
import json
from dataclasses import asdict, dataclass, field

from kernels.errors import EXIT_BAD_INPUT, EXIT_TEMPFAIL

STAGES = ("index", "split", "align", "call", "gather")
MPI_STAGES = ("align",)


class Outcome(str, enum.Enum):
    DONE = "done"
    BAD_INPUT = "bad_input"
    TEMPORARY = "temporary"
    FAILED = "failed"
    PREEMPTED = "preempted"


EXIT = {Outcome.DONE: 0, Outcome.BAD_INPUT: EXIT_BAD_INPUT, Outcome.TEMPORARY: EXIT_TEMPFAIL, Outcome.FAILED: 1,
        Outcome.PREEMPTED: 143}
EXIT_PREEMPTED = EXIT[Outcome.PREEMPTED]      # 128 + SIGTERM: a clean preemption


def outcome_of_exit(code):
    """The outcome a worker's (or kernel's) exit code stands for; None for a code it never uses."""
    for o, c in EXIT.items():
        if c == code:
            return o
    return None


def outcome_of_kernel(rc):
    """A kernel's exit code (not a signal) as the task's outcome."""
    return {0: Outcome.DONE, EXIT_BAD_INPUT: Outcome.BAD_INPUT, EXIT_TEMPFAIL: Outcome.TEMPORARY}.get(rc, Outcome.FAILED)


# ---------------------------------------------------------------- the files tasks hand each other
DONE_MARKER = "_genefarm.json"       # written last into a task's output directory: it is complete
PART = "part.bam"                    # align: the chunk's part file (kernels.partfile), with its tables
QUAL_COUNTS = "qual-counts.json"     # align: the chunk's base-quality counts (kernels.qualcal)
CHUNK_GLOB = "chunk.c*_R1.fastq.gz"  # split: chunk files, PREFIX.cNNNN_R1/_R2.fastq.gz
REGION_VCF = "region.vcf.gz"         # call: the shard's VCF (+ .tbi)
REGION_BAM = "region.bam"            # call: the shard's sorted, duplicate-marked records (+ .bai)
INDEX_PREFIX = "ref"                 # index: ref.gfi.* in the task's directory


@dataclass
class Memory:
    """limit_mb: what the task asked for (all its ranks); peak_private_mb: the kernel's largest
    private memory seen; exceeded: the worker stopped it (or the system killed it) for memory."""
    limit_mb: int = 0
    peak_private_mb: float = 0.0
    exceeded: bool = False


@dataclass
class Report:
    """What a worker says of one attempt (report.json, written once per (task, attempt)).

    task, attempt, stage  which attempt
    outcome               an Outcome value; exit_code its code
    message               why, in words ("" when done)
    node                  the host it ran on; started, ended: epoch seconds
    cpu_seconds, peak_mb  the kernel's CPU time and peak resident memory (getrusage)
    memory                Memory
    result                the kernel's JSON summary
    outputs               name -> URI (only when done)
    by                    "worker", or "master" for a report the master wrote (a lost submission)"""
    task: int
    attempt: int
    stage: str
    outcome: str
    exit_code: int
    message: str = ""
    node: str = ""
    started: float = 0.0
    ended: float = 0.0
    cpu_seconds: float | None = None
    peak_mb: float | None = None
    memory: Memory = field(default_factory=Memory)
    result: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    by: str = "worker"

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """A report read back (a missing field gets its default; an unknown one is ignored)."""
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        kw["memory"] = Memory(**{k: v for k, v in (d.get("memory") or {}).items()
                                 if k in Memory.__dataclass_fields__})
        for k in ("task", "attempt", "stage", "outcome", "exit_code"):
            kw.setdefault(k, None)
        return cls(**kw)

    @property
    def memory_exceeded(self):
        return self.outcome == Outcome.FAILED.value and self.memory.exceeded


def read_report(report_dir):
    """The Report of an attempt, or None when the worker has not written one (yet)."""
    import os
    try:
        with open(os.path.join(report_dir, "report.json")) as f:
            return Report.from_dict(json.load(f))
    except (OSError, ValueError, TypeError):
        return None
