"""bcc's state: clusters, their groups and nodes, and every step taken (events).

A SQLite file, GENEFARM_HOME/bcc/bcc.db (SQLAlchemy 2), that the master and the web UI read
through bcc.api. One writer at a time per cluster (bcc commands take a lock file per cluster).
"""
import datetime as dt
import json
import os

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

# a node's life, in order; `failed` and `gone` are terminal
NODE_STATES = ("creating", "bootstrapping", "joining", "up", "draining", "removing", "gone", "failed")
LIVE_STATES = ("creating", "bootstrapping", "joining", "up", "draining", "removing")


def home():
    return os.path.join(os.path.expanduser(os.environ.get("GENEFARM_HOME") or "~/.genefarm"), "bcc")


def now():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Cluster(Base):
    __tablename__ = "clusters"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)        # c-<hex>
    provider: Mapped[str] = mapped_column(String(16))
    scheduler: Mapped[str] = mapped_column(String(8))                     # sge | slurm
    state: Mapped[str] = mapped_column(String(16), default="starting")   # starting|running|stopping|stopped|failed
    master: Mapped[dict] = mapped_column(JSON, default=dict)             # name, address, ssh spec, network
    config: Mapped[dict] = mapped_column(JSON, default=dict)             # ports, cidr, mounts, provider settings
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, onupdate=now)


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    instance_type: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer, default=0)                 # wanted number of nodes
    disks: Mapped[list] = mapped_column(JSON, default=list)


class Node(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    group: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    provider_id: Mapped[str] = mapped_column(String(128), default="")
    instance_type: Mapped[str] = mapped_column(String(64), default="")
    image: Mapped[str] = mapped_column(String(128), default="")
    slots: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="creating")
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, onupdate=now)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(32), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    node: Mapped[str] = mapped_column(String(128), default="")
    step: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")


_engines = {}


def db_path(base=None):
    return os.path.join(base or home(), "bcc.db")


def sessions(base=None):
    """A sessionmaker over GENEFARM_HOME/bcc/bcc.db (created on first use)."""
    path = db_path(base)
    if path not in _engines:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        eng = create_engine(f"sqlite:///{path}", future=True, connect_args={"timeout": 30})

        @event.listens_for(eng, "connect")
        def _pragma(conn, _rec):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        Base.metadata.create_all(eng)
        _engines[path] = sessionmaker(eng, expire_on_commit=False)
    return _engines[path]


def log_event(db, cluster_id, step, message, node=""):
    db.add(Event(cluster_id=cluster_id, step=step, message=message, node=node))
    db.commit()


def live_nodes(db, cluster_id, group=None):
    q = select(Node).where(Node.cluster_id == cluster_id, Node.state.in_(LIVE_STATES))
    if group:
        q = q.where(Node.group == group)
    return list(db.scalars(q.order_by(Node.id)))


def as_dict(row):
    d = {c.name: getattr(row, c.name) for c in row.__table__.columns}
    for k, v in d.items():
        if isinstance(v, dt.datetime):
            d[k] = v.isoformat(timespec="seconds") + "Z"
    return d


def current_file(base=None):
    return os.path.join(base or home(), "current")


def set_current(cluster_id, base=None):
    path = current_file(base)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(cluster_id + "\n")
    os.replace(tmp, path)


def get_current(base=None):
    try:
        with open(current_file(base)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def dumps(obj):
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
