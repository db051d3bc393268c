"""The store: SQLAlchemy 2 models and the engine/session factory (SQLite by default, PostgreSQL by URL).

Tables (times are seconds since the epoch, floats, the same on every database):
    references   a reference genome a sample can be aligned to (name, URI, content hash)
    samples      a FASTQ pair + a reference + how many regions to split it into (name unique)
    runs         one pass of the pipeline over a sample (a resubmission is a new run)
    tasks        one unit of work of a run: stage, inputs, outputs, region, params, resources,
                 state (master.states.TaskState), cache key, retries and preemptions spent apart
    attempts     every submission of a task: backend job id, node, start/end, exit code, CPU
                 seconds, peak memory, log, why it ended (master.states.EndReason);
                 (task, number) is unique, so a report for an attempt is applied once
    cache        finished work by cache key: the outputs and the kernel's summary
    events       what happened to a task and why, in words (what `genefarm explain` prints)
    tokens       API tokens, hashed (werkzeug.security); the token itself is never stored
    file_hashes  content hashes of input files, remembered by (uri, size, mtime)
"""
import time

from sqlalchemy import (JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine,
                        event, select)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from master.states import RunState, TaskState


class Base(DeclarativeBase):
    pass


def now():
    return time.time()


class Reference(Base):
    __tablename__ = "references"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    contigs: Mapped[int] = mapped_column(Integer, default=0)
    bases: Mapped[int] = mapped_column(BigInteger, default=0)        # non-N bases
    # [[name, length, kind, [[start, end], ... N runs]], ...] (master.planner.layout_of): what the
    # planner needs, kept from the registration's scan; [] in a store made before it
    layout: Mapped[list] = mapped_column(JSON, default=list)
    created: Mapped[float] = mapped_column(Float, default=now)

    def to_dict(self):
        return {"id": self.id, "name": self.name, "uri": self.uri, "sha256": self.sha256, "contigs": self.contigs,
                "bases": self.bases, "created": self.created}


class Sample(Base):
    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("references.id"))
    r1: Mapped[str] = mapped_column(Text)            # the first lane's files
    r2: Mapped[str] = mapped_column(Text)
    # every lane: [{"id": lane id (its read group), "r1": uri, "r2": uri}, ...]; [] for a store
    # made before lanes (then r1/r2 are the one lane)
    lanes: Mapped[list] = mapped_column(JSON, default=list)
    regions: Mapped[int] = mapped_column(Integer)
    output: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[float] = mapped_column(Float, default=now)
    reference: Mapped[Reference] = relationship()
    runs: Mapped[list["Run"]] = relationship(back_populates="sample", order_by="Run.id")

    @property
    def lane_list(self):
        return self.lanes or [{"id": self.name, "r1": self.r1, "r2": self.r2}]

    def to_dict(self):
        return {"id": self.id, "name": self.name, "reference": self.reference.name, "r1": self.r1, "r2": self.r2,
                "lanes": self.lane_list, "regions": self.regions, "output": self.output, "params": self.params, "created": self.created,
                "runs": [r.id for r in self.runs]}


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    state: Mapped[str] = mapped_column(String(20), default=RunState.RUNNING.value)
    backend: Mapped[str] = mapped_column(String(20), default="local")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[float] = mapped_column(Float, default=now)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    sample: Mapped[Sample] = relationship(back_populates="runs")
    tasks: Mapped[list["Task"]] = relationship(back_populates="run", order_by="Task.id")

    def to_dict(self, counts=None):
        d = {"id": self.id, "sample": self.sample.name, "state": self.state, "backend": self.backend,
             "message": self.message, "summary": self.summary, "created": self.created, "finished": self.finished}
        if counts is not None:
            d["tasks"] = counts
        return d


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("run_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    stage: Mapped[str] = mapped_column(String(20))
    key: Mapped[str] = mapped_column(String(100), index=True)   # unique in the run, e.g. "align/c0003"
    state: Mapped[str] = mapped_column(String(20), default=TaskState.PENDING.value, index=True)
    deps: Mapped[list] = mapped_column(JSON, default=list)   # keys of the tasks it waits for
    inputs: Mapped[dict] = mapped_column(JSON, default=dict)
    outputs: Mapped[dict] = mapped_column(JSON, default=dict)
    region: Mapped[str] = mapped_column(String(200), default="")
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    resources: Mapped[dict] = mapped_column(JSON, default=dict)
    cache_key: Mapped[str] = mapped_column(String(64), default="")
    basis: Mapped[dict] = mapped_column(JSON, default=dict)       # what the cache key is made of
    retries: Mapped[int] = mapped_column(Integer, default=0)       # failures that spent a retry
    preemptions: Mapped[int] = mapped_column(Integer, default=0)   # requeues that did not
    reason: Mapped[str] = mapped_column(Text, default="")          # the latest why, in words
    result: Mapped[dict] = mapped_column(JSON, default=dict)       # the kernel's summary
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[float] = mapped_column(Float, default=now)
    updated: Mapped[float] = mapped_column(Float, default=now)
    run: Mapped[Run] = relationship(back_populates="tasks")
    attempts: Mapped[list["Attempt"]] = relationship(back_populates="task", order_by="Attempt.number")

    def to_dict(self):
        return {"id": self.id, "run": self.run_id, "stage": self.stage, "key": self.key, "state": self.state,
                "region": self.region, "inputs": self.inputs, "outputs": self.outputs, "params": self.params,
                "resources": self.resources, "cache_key": self.cache_key, "cached": self.cached,
                "retries": self.retries, "preemptions": self.preemptions, "reason": self.reason,
                "result": self.result, "attempts": len(self.attempts), "deps": self.deps}


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("task_id", "number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(20))
    job_id: Mapped[str] = mapped_column(String(100), default="", index=True)
    state: Mapped[str] = mapped_column(String(20), default="queued")   # last JobState seen
    node: Mapped[str] = mapped_column(String(200), default="")
    submitted: Mapped[float] = mapped_column(Float, default=now)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    end_reason: Mapped[str] = mapped_column(String(20), default="", index=True)   # EndReason, "" while open
    cpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    log: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(Text, default="")
    task: Mapped[Task] = relationship(back_populates="attempts")

    def to_dict(self):
        return {c: getattr(self, c) for c in ("id", "task_id", "number", "backend", "job_id", "state", "node",
                                             "submitted", "started", "ended", "heartbeat", "exit_code",
                                             "end_reason", "cpu_seconds", "peak_mb", "wall_seconds", "log",
                                             "message")}


class CacheEntry(Base):
    __tablename__ = "cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage: Mapped[str] = mapped_column(String(20))
    outputs: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    task_id: Mapped[int] = mapped_column(Integer)
    created: Mapped[float] = mapped_column(Float, default=now)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    at: Mapped[float] = mapped_column(Float, default=now)
    kind: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)

    def to_dict(self):
        return {"at": self.at, "run": self.run_id, "task": self.task_id, "kind": self.kind, "text": self.text}


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    hash: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float, default=now)


class FileHash(Base):
    __tablename__ = "file_hashes"
    uri: Mapped[str] = mapped_column(String(1000), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))


def make_engine(url):
    """An engine for url; SQLite gets WAL and a busy timeout (the API and the poller share it)."""
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(eng, "connect")
        def _pragmas(conn, _):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    else:
        eng = create_engine(url, pool_pre_ping=True)
    return eng


# columns added since a store's tables were first made: (table, column, SQL type), added when missing
ADDED_COLUMNS = [("samples", "lanes", "JSON"), ("references", "layout", "JSON")]
# indexes added since: (table, column) -> ix_<table>_<column>, made when missing
ADDED_INDEXES = [("attempts", "end_reason"), ("events", "run_id"), ("tasks", "key")]


def open_store(url):
    """(engine, sessionmaker) with the tables created (and the columns added since, in a store made
    by an earlier version)."""
    from sqlalchemy import inspect, text
    eng = make_engine(url)
    Base.metadata.create_all(eng)
    insp = inspect(eng)
    for table, col, typ in ADDED_COLUMNS:
        if col not in {c["name"] for c in insp.get_columns(table)}:
            with eng.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {col} {typ}"))
    for table, col in ADDED_INDEXES:
        with eng.begin() as conn:
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS ix_{table}_{col} ON {table} ({col})"))
    return eng, sessionmaker(eng, expire_on_commit=False)


def add_event(db, run_id, task_id, kind, text):
    db.add(Event(run_id=run_id, task_id=task_id, kind=kind, text=text))


def task_counts(db, run_id):
    counts = {s.value: 0 for s in TaskState}
    for (st,) in db.execute(select(Task.state).where(Task.run_id == run_id)):
        counts[st] += 1
    return counts
