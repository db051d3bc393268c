"""Read-only view of bcc's state for the master and the web UI (they never write it).

    from bcc import api
    api.clusters()                  -> [ClusterView]   every cluster bcc knows
    api.current()                   -> ClusterView | None   the attached one
    api.nodes(cluster_id)           -> [NodeView]      its live nodes (state, group, slots, address)
    api.events(cluster_id, n=50)    -> [EventView]     the last steps bcc took
    api.scheduler_settings(cluster_id) -> dict          what a client on the master sources to reach
                                                       the cluster (SGE_ROOT/SGE_CELL/ports, or SLURM_CONF)
GENEFARM_HOME selects the state (GENEFARM_HOME/bcc/bcc.db), as for bcc itself.
"""
from dataclasses import dataclass

from sqlalchemy import select

from bcc import state


@dataclass(frozen=True)
class ClusterView:
    id: str
    provider: str
    scheduler: str
    state: str
    master_name: str
    master_address: str
    groups: dict          # name -> {"size": wanted, "instance_type", "image"}


@dataclass(frozen=True)
class NodeView:
    name: str
    group: str
    address: str
    state: str
    slots: int
    instance_type: str
    image: str


@dataclass(frozen=True)
class EventView:
    at: str
    node: str
    step: str
    message: str


def _cluster_view(db, c):
    groups = {g.name: {"size": g.size, "instance_type": g.instance_type, "image": g.image}
              for g in db.scalars(select(state.Group).where(state.Group.cluster_id == c.id))}
    return ClusterView(c.id, c.provider, c.scheduler, c.state, c.master.get("name", ""), c.master.get("address", ""),
                       groups)


def clusters(base=None):
    with state.sessions(base)() as db:
        return [_cluster_view(db, c) for c in db.scalars(select(state.Cluster).order_by(state.Cluster.created_at))]


def current(base=None):
    cid = state.get_current(base)
    if not cid:
        return None
    with state.sessions(base)() as db:
        c = db.get(state.Cluster, cid)
        return _cluster_view(db, c) if c else None


def nodes(cluster_id, base=None):
    with state.sessions(base)() as db:
        return [NodeView(n.name, n.group, n.address, n.state, n.slots, n.instance_type, n.image)
                for n in state.live_nodes(db, cluster_id)]


def events(cluster_id, n=50, base=None):
    with state.sessions(base)() as db:
        rows = list(db.scalars(select(state.Event).where(state.Event.cluster_id == cluster_id)
                               .order_by(state.Event.id.desc()).limit(n)))[::-1]
        return [EventView(state.as_dict(e)["at"], e.node, e.step, e.message) for e in rows]


def scheduler_settings(cluster_id, base=None):
    """Client settings of a running cluster (recorded by `bcc start` when the master came up): a
    plain read of the state, no lock and no connection, so it never waits for a running bcc."""
    with state.sessions(base)() as db:
        c = db.get(state.Cluster, cluster_id)
        return dict(c.config.get("client_env", {})) if c else {}
