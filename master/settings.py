"""Settings: GENEFARM_HOME/config.toml, overridden by GENEFARM_* environment variables.

GENEFARM_HOME (default ~/.genefarm) holds everything a master keeps:
    config.toml       settings (optional; every key below, in a [master] table)
    genefarm.db       the SQLite store (unless db_url names another database)
    token             the API token of this install (mode 0600; only its hash is in the store)
    logs/             master, poller and task logs
    work/             task outputs, one directory per cache key (found again by later runs)
    runs/             task messages and array manifests, one directory per run
    jobs/             the local backend's job records
Each key can be set by the environment: db_url <- GENEFARM_DB_URL, backend <- GENEFARM_BACKEND, ...
"""
import os
import tomllib
from dataclasses import dataclass, field, fields

DEFAULT_HOME = "~/.genefarm"


@dataclass
class Settings:
    home: str
    db_url: str = ""
    backend: str = "local"             # local | drmaa | sge | slurm
    max_queued: int = 200              # array tasks queued or running at once, per master
    max_retries: int = 2               # retries of a failed task (preemptions do not count)
    max_preemptions: int = 20          # requeues after preemption before the task is failed
    poll_seconds: float = 2.0          # the poller's period
    heartbeat_seconds: float = 10.0    # the worker's heartbeat period
    lost_after: float = 120.0          # an attempt the backend no longer knows, with no report and no
    #                                    heartbeat for this long, is lost (requeued as preempted)
    local_slots: int = 0               # cores of the local backend (0: all of this machine's)
    python: str = ""                   # the Python that runs workers on the nodes (default: this one)
    queue: str = ""                    # SGE queue / Slurm partition ("" = the scheduler's default)
    parallel_env: str = "smp"          # SGE parallel environment for multi-rank tasks
    default_regions: int = 0           # call shards: 0 sizes them by the reads (master.planner)
    max_regions: int = 4096
    chunk_pairs: int = 0               # read pairs per alignment chunk: 0 chooses by the input's size
    threads: int = 2                   # threads per align/call task
    parallel_tasks: int = 0            # tasks of a stage that run at once (0: local_slots / threads on
    #                                    the local backend, not known on a cluster); a small sample
    #                                    gets no more align chunks and call shards than that
    node_memory_mb: int = 0            # the most memory a node gives a task (0: this machine's): a plan
    #                                    whose task would need more is refused before anything runs
    api_url: str = ""                  # where the CLI finds the API (default http://127.0.0.1:port)
    host: str = "127.0.0.1"
    port: int = 8642
    extra: dict = field(default_factory=dict)
    _made: set = field(default_factory=set, repr=False, compare=False)

    @property
    def db_path(self):
        return os.path.join(self.home, "genefarm.db")

    def dir(self, name):
        p = os.path.join(self.home, name)
        if name not in self._made:
            os.makedirs(p, exist_ok=True)
            self._made.add(name)
        return p

    @property
    def token_file(self):
        return os.path.join(self.home, "token")

    @property
    def url(self):
        return self.api_url or f"http://{self.host}:{self.port}"


def _convert(f, value):
    if f.type in (int, "int"):
        return int(value)
    if f.type in (float, "float"):
        return float(value)
    return value


def load(home=None, **overrides):
    """Settings for GENEFARM_HOME (or home): config file, then environment, then overrides."""
    home = os.path.abspath(os.path.expanduser(home or os.environ.get("GENEFARM_HOME") or DEFAULT_HOME))
    os.makedirs(home, exist_ok=True)
    values = {}
    cfg = os.path.join(home, "config.toml")
    known = {f.name: f for f in fields(Settings) if f.name not in ("home", "extra")}
    extra = {}
    if os.path.exists(cfg):
        with open(cfg, "rb") as fh:
            try:
                data = tomllib.load(fh).get("master", {})
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{cfg}: not valid TOML ({e}); fix or remove it") from None
        for k, v in data.items():
            if k in known:
                values[k] = _convert(known[k], v)
            else:
                extra[k] = v
    for k, f in known.items():
        env = os.environ.get("GENEFARM_" + k.upper())
        if env not in (None, ""):
            values[k] = _convert(f, env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    s = Settings(home=home, extra=extra, **values)
    if not s.db_url:
        s.db_url = "sqlite:///" + s.db_path
    if not s.local_slots:
        s.local_slots = os.cpu_count() or 1
    if not s.python:
        import sys
        s.python = sys.executable
    return s
