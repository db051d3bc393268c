"""The states of tasks, attempts, runs and backend jobs, and the moves allowed between them.

TaskState (one per task; only the master changes it):

    PENDING  -> READY       its inputs are done
    READY    -> QUEUED      an attempt was submitted to the backend
    READY    -> DONE        a cache hit: the same work was done before (no attempt)
    QUEUED   -> RUNNING     the backend (or the worker's heartbeat) says it started
    QUEUED/RUNNING -> DONE       the attempt ended well
    QUEUED/RUNNING -> READY      the attempt ended but the task gets another one (retry, preempted, lost)
    QUEUED/RUNNING -> FAILED     bad input, or out of retries
    any non-terminal -> CANCELLED

DONE, FAILED and CANCELLED are terminal: nothing moves a task out of them (a resubmitted
sample makes a new run with new tasks, which find the done work again through the cache).

JobState is the one enum every scheduler's own states are translated into, at the edge (in the
backend module); a state a backend does not know becomes UNKNOWN, never an exception.
"""
import enum


class TaskState(str, enum.Enum):
    PENDING = "pending"
    READY = "ready"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})
ACTIVE = frozenset({TaskState.QUEUED, TaskState.RUNNING})

ALLOWED = {
    TaskState.PENDING: {TaskState.READY, TaskState.CANCELLED},
    TaskState.READY: {TaskState.QUEUED, TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED},
    TaskState.QUEUED: {TaskState.RUNNING, TaskState.DONE, TaskState.READY, TaskState.FAILED,
                       TaskState.CANCELLED},
    TaskState.RUNNING: {TaskState.DONE, TaskState.READY, TaskState.FAILED, TaskState.CANCELLED},
    TaskState.DONE: set(),
    TaskState.FAILED: set(),
    TaskState.CANCELLED: set(),
}


class IllegalTransition(Exception):
    """A state change the table above does not allow: a bug in the master, never user input."""


def check_transition(old, new):
    old, new = TaskState(old), TaskState(new)
    if old == new:
        return
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"task state {old.value} -> {new.value} is not allowed")


class RunState(str, enum.Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_TERMINAL = frozenset({RunState.DONE, RunState.FAILED, RunState.CANCELLED})


class EndReason(str, enum.Enum):
    """Why an attempt ended (a column of every attempt row)."""
    DONE = "done"              # exit 0, outputs present
    FAILED = "failed"          # non-zero exit (bad input: no retry; temporary or crash: retry)
    PREEMPTED = "preempted"    # killed by a signal, SIGTERM, or its process vanished: requeued free
    CANCELLED = "cancelled"    # cancelled by a user


class JobState(str, enum.Enum):
    """A backend job (one array element) as any scheduler reports it, translated."""
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"            # ended with exit code 0
    FAILED = "failed"        # ended otherwise (exit code or signal in JobStatus)
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"      # the scheduler does not say (gone from its lists, or a state we do not know)


JOB_FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

# a task's exit codes and outcomes: worker/contract.py
