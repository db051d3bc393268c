"""The task message: what the master tells a worker to do (versioned JSON), and what it reports back.

TaskMessage (version 1), one JSON object:
    version     1
    task        the task's id in the master's store
    attempt     the attempt number (1, 2, ...): a report is about one (task, attempt), written once
    run         the run the task belongs to
    stage       index | split | align | call | gather
    key         the task's name in its run, e.g. "align/c0003"
    inputs      name -> URI, name -> list of URIs (plain path, file://, s3://, oss://), or name ->
                {"manifest": URI of a JSON file {"uris": [...]}}: many inputs named once per stage
    outputs     name -> URI of a directory the task fills (delivered whole when the task is done)
    region      CHR:START-END (1-based, inclusive) for a call task, "" otherwise
    params      stage parameters (e.g. pairs per chunk, read group)
    resources   cpus (threads), memory_mb, ranks (MPI ranks, 1 = no MPI)
    report      directory (shared filesystem) where the worker writes heartbeat.json and report.json
    notify      directory where the worker then drops an empty file <task>.<attempt>: the master
                looks there for the attempts that ended (one listing, not one read per attempt)

The report a worker writes back (report.json, once per (task, attempt)) is worker.contract.Report.
"""
import json
import os
from dataclasses import asdict, dataclass, field

VERSION = 1
from worker.contract import STAGES


class MessageError(Exception):
    pass


@dataclass
class TaskMessage:
    task: int
    attempt: int
    run: int
    stage: str
    key: str
    inputs: dict
    outputs: dict
    report: str
    region: str = ""
    notify: str = ""
    params: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    version: int = VERSION

    def to_json(self):
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise MessageError("a task message is a JSON object")
        if d.get("version") != VERSION:
            raise MessageError(f"task message version {d.get('version')!r}: this worker reads version {VERSION}; "
                               f"update genefarm on the node")
        missing = [k for k in ("task", "attempt", "run", "stage", "key", "inputs", "outputs", "report") if k not in d]
        if missing:
            raise MessageError(f"task message lacks {', '.join(missing)}")
        if d["stage"] not in STAGES:
            raise MessageError(f"unknown stage {d['stage']!r} (known: {', '.join(STAGES)})")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def cpus(self):
        return int(self.resources.get("cpus", 1))

    @property
    def ranks(self):
        return int(self.resources.get("ranks", 1))


def load(path):
    try:
        with open(path) as f:
            return TaskMessage.from_dict(json.load(f))
    except OSError as e:
        raise MessageError(f"{path}: cannot read the task message ({e.strerror or e})") from None
    except ValueError as e:
        raise MessageError(f"{path}: not JSON ({e})") from None


def write_json_atomic(path, obj, exclusive=False):
    """Write obj as JSON under a temporary name, then rename. exclusive: keep an existing file
    (returns False), so a report is written once per (task, attempt)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if exclusive and os.path.exists(path):
        return False
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    if exclusive:
        try:
            os.link(tmp, path)          # fails if a report is already there
        except FileExistsError:
            os.unlink(tmp)
            return False
        os.unlink(tmp)
        return True
    os.replace(tmp, path)
    return True


def read_heartbeat(report_dir):
    try:
        with open(os.path.join(report_dir, "heartbeat.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
