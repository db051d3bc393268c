"""The region planner: the frame splitter of the farm.

`make_plan(contigs, pairs)` (what the pipeline and `genefarm plan` use) sizes the work by the
sample: call shards of about PAIRS_PER_CALL expected read pairs each (a 30x human genome: about
2,000), big contigs cut into pieces of that weight (cuts in N runs when near), small contigs
packed together into multi-interval shards, and ALT, decoy and HLA contigs packed apart into
shards whose reads are sorted and marked for the BAM but not called (kernels.call calls the
primary assembly only); align chunks of about PAIRS_PER_CHUNK pairs (a 30x genome: a few
hundred tasks; a small sample: a few). The pieces are the BED rows the aligner groups its
records by; a shard is a run of consecutive rows (kernels.call --only I-J). Each task's memory
and cores come from a per-stage model (`resources`).

`plan(contigs, k)` (below, and the building block of make_plan) cuts the genome into k contiguous
regions that together cover every contig exactly once, each inside one contig, balanced by
their number of non-N bases (N bases get no reads, so they cost nothing), with every cut moved
into an N run when one lies near the ideal cut (a cut inside a gap splits no read pile-ups).

1. Regions are shared out between contigs so that the heaviest region is as light as it can be
   (each contig gets at least one; then, one at a time, the contig whose regions are heaviest
   gets another: greedy on a max-heap, optimal for this min-max problem).
2. In a contig given m regions, cut j goes where the non-N bases before it reach j/m of the
   contig's; if an N run overlaps the window of +-tol of one region's weight around that
   point, the cut goes to the middle of the nearest such run instead.

Region (one row of a plan):
    index    0-based number in the plan (the order of the genome: contigs in index order)
    contig   contig name
    start    0-based first base
    end      0-based end, exclusive
    weight   non-N bases in [start, end)
"""
import heapq
from dataclasses import dataclass

import numpy as np

N_CODE = 4           # kernels.dna: base code of N
MIN_REGION_BASES = 10000


@dataclass(frozen=True)
class Region:
    index: int
    contig: str
    start: int
    end: int
    weight: int

    @property
    def spec(self):
        """CHR:START-END, 1-based inclusive (what `kernels.call --region` takes; {CHR} when the name holds ':')."""
        from kernels.regions import region_text
        return region_text(self.contig, self.start, self.end)

    @property
    def name(self):
        return f"r{self.index:04d}"


@dataclass
class Contig:
    """A contig's length, its N runs (sorted, disjoint, half-open [nstart, nend)) and its kind
    (primary / alt / decoy / hla: kernels.index)."""
    name: str
    length: int
    nstarts: np.ndarray
    nends: np.ndarray
    kind: str = "primary"

    @property
    def weight(self):
        return int(self.length - int(np.sum(self.nends - self.nstarts)))


def n_runs(codes):
    """(starts, ends) of the runs of N (code 4) in a contig's base codes."""
    isn = np.asarray(codes) == N_CODE
    if not isn.any():
        e = np.empty(0, np.int64)
        return e, e.copy()
    d = np.diff(np.concatenate(([0], isn.view(np.int8), [0])))
    return np.flatnonzero(d == 1).astype(np.int64), np.flatnonzero(d == -1).astype(np.int64)


def allocate(weights, k):
    """Regions per contig: at least one each, k in all, minimising the heaviest region's weight."""
    n = len(weights)
    if k < n:
        raise ValueError(f"{k} regions cannot cover {n} contigs (a region lies in one contig)")
    counts = [1] * n
    heap = [(-w, i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    for _ in range(k - n):
        _, i = heapq.heappop(heap)
        counts[i] += 1
        heapq.heappush(heap, (-weights[i] / counts[i], i))
    return counts


def _weight_before(c, pos):
    """Non-N bases of contig c in [0, pos)."""
    inside = np.minimum(c.nends, pos) - np.minimum(c.nstarts, pos)
    return int(pos - int(np.sum(np.maximum(inside, 0))))


def _pos_of_weight(c, target):
    """Smallest position p with _weight_before(c, p) == target (p is a non-N base or the end)."""
    pos = 0
    acc = 0
    for s, e in zip(c.nstarts.tolist(), c.nends.tolist()):
        seg = s - pos                # non-N bases before this run
        if acc + seg >= target:
            return pos + (target - acc)
        acc += seg
        pos = e
    return pos + (target - acc)


def _cuts(c, m, tol):
    """The m-1 cut positions inside contig c."""
    W = c.weight
    cuts = []
    lo = 0
    for j in range(1, m):
        t = (W * j) // m
        ideal = _pos_of_weight(c, t) if W else (c.length * j) // m
        best = ideal
        if len(c.nstarts):
            win = max(1, int(tol * W / m))
            a = _pos_of_weight(c, max(0, t - win)) if W else ideal
            b = _pos_of_weight(c, min(W, t + win)) if W else ideal
            # N runs overlapping [a, b]
            i0 = int(np.searchsorted(c.nends, a, side="left"))
            i1 = int(np.searchsorted(c.nstarts, b, side="right"))
            bestd = None
            for i in range(i0, i1):
                s, e = int(c.nstarts[i]), int(c.nends[i])
                mid = (max(s, a) + min(e, b)) // 2 if e - s > 2 * (b - a) else (s + e) // 2
                d = abs(mid - ideal)
                if bestd is None or d < bestd:
                    best, bestd = mid, d
        best = min(max(best, lo + 1), c.length - (m - j))     # non-empty regions, increasing cuts
        cuts.append(best)
        lo = best
    return cuts


def plan(contigs, k, tol=0.1):
    """k regions over the contigs (a list of Contig): see the module doc."""
    if k < 1:
        raise ValueError("need at least one region")
    if any(c.length < 1 for c in contigs):
        raise ValueError("a contig of length 0 cannot be planned")
    counts = allocate([max(c.weight, 1) for c in contigs], k)
    regions = []
    for c, m in zip(contigs, counts):
        if m > c.length:
            raise ValueError(f"contig {c.name} ({c.length} bp) cannot hold {m} regions")
        bounds = [0] + _cuts(c, m, tol) + [c.length]
        for a, b in zip(bounds[:-1], bounds[1:]):
            regions.append(Region(len(regions), c.name, a, b, _weight_before(c, b) - _weight_before(c, a)))
    return regions


def contigs_of_index(prefix):
    """Contigs (with their N runs and kinds) of a genefarm index (kernels.index): from its gaps
    table, without reading the bases."""
    from kernels import index as gindex
    idx = gindex.load(prefix)
    gaps = np.asarray(idx.gaps)
    out = []
    for c in idx.meta["contigs"]:
        a, b = int(c["offset"]), int(c["offset"]) + int(c["length"])
        i0, i1 = np.searchsorted(gaps[:, 0], [a, b], side="left") if len(gaps) else (0, 0)
        g = gaps[i0:i1] - a
        out.append(Contig(c["name"], int(c["length"]), g[:, 0].astype(np.int64), g[:, 1].astype(np.int64),
                          c.get("kind", "primary")))
    return out


def contigs_of_layout(layout):
    """Contigs from a reference's layout ([[name, length, kind, [[s, e], ...]], ...], master.store)."""
    return [Contig(n, int(ln), np.array([s for s, _ in g], np.int64), np.array([e for _, e in g], np.int64), k)
            for n, ln, k, g in layout]


def layout_of(contigs):
    return [[c.name, int(c.length), c.kind, [[int(s), int(e)] for s, e in zip(c.nstarts, c.nends)]]
            for c in contigs]


# ---------------------------------------------------------------- plans sized by the work

PAIRS_PER_CALL = 200_000      # expected read pairs of a call shard (a 30x human genome: ~2,000 shards)
PAIRS_PER_CHUNK = 2_000_000   # read pairs of an align chunk (30x: ~200 tasks)
MIN_CHUNKS = 4                # a small sample is still aligned by a few tasks...
MIN_CHUNK_PAIRS = 5_000       # ...of at least this many pairs
MAX_PAIRS_PER_CALL = 1_000_000  # a call shard's most (its memory: master.resources, about 2.3 GB)
CARRY_FACTOR = 4              # a shard of ALT/decoy/HLA contigs (sorted, not called) weighs this many shards
MAX_SHARD_INTERVALS = 5000    # contigs packed into one shard at most


@dataclass(frozen=True)
class Shard:
    """One call task: consecutive pieces first..last (rows of the plan's BED, included)."""
    index: int
    first: int
    last: int
    weight: int          # non-N bases
    pairs: float         # read pairs expected to start in it
    calls: bool          # False: ALT/decoy/HLA contigs, whose reads are sorted and marked, not called

    @property
    def name(self):
        return f"r{self.index:04d}"

    def intervals(self, pieces):
        return pieces[self.first:self.last + 1]

    def spec(self, pieces):
        """Its first interval as CHR:START-END, and how many more (what the UI and explain show)."""
        first = pieces[self.first]
        more = self.last - self.first
        return first.spec + (f" +{more} more" if more else "")


@dataclass
class Plan:
    """pieces: the BED rows (Region) tiling every contig; shards: the call tasks; chunk_pairs:
    pairs per align chunk; pairs: the sample's read pairs (expected); resources per stage."""
    pieces: list
    shards: list
    chunk_pairs: int
    pairs: int
    lanes: int = 1

    @property
    def chunks(self):
        return max(1, -(-self.pairs // self.chunk_pairs))

    def tasks(self):
        return {"index": 1, "split": self.lanes, "align": self.chunks + self.lanes - 1, "call": len(self.shards),
                "gather": 1}

    def to_dict(self, resources=None):
        d = {"pairs": int(self.pairs), "chunk_pairs": int(self.chunk_pairs), "tasks": self.tasks(),
             "regions": [{"name": s.name, "calls": s.calls, "weight": s.weight, "pairs": round(s.pairs),
                          "intervals": [[r.contig, r.start, r.end] for r in s.intervals(self.pieces)]}
                         for s in self.shards]}
        if resources:
            d["memory_mb"] = {st: r["memory_mb"] for st, r in resources.items()}
            d["cores"] = {st: r["cpus"] for st, r in resources.items()}
        return d


BYTES_PER_RECORD_GZ = 90      # a gzip FASTQ record of 2x150 data, when the file cannot be sampled


def estimate_pairs(r1, size=None):
    """Read pairs of a FASTQ pair from its R1: its size over the bytes a record takes, sampled from
    the file's first megabytes when it is a local file (plain or gzip), else a typical figure."""
    import os
    import zlib
    try:
        size = os.path.getsize(r1) if size is None else size
        with open(r1, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            raw = f.read(4 << 20)
        if gz:
            d = zlib.decompressobj(31)
            text = d.decompress(raw)
            used = len(raw) - len(d.unused_data)
            per = used / max(1, text.count(b"\n") / 4)
        else:
            per = len(raw) / max(1, raw.count(b"\n") / 4)
        return max(1, int(size / max(per, 1)))
    except (OSError, ValueError, EOFError):
        return max(1, int((size or 0) / BYTES_PER_RECORD_GZ))


def parallel_of(settings):
    """How many tasks of a stage run at once, when the master knows: the setting, else on the local
    backend its cores over the threads of a task; None (not known: a cluster's) otherwise."""
    if getattr(settings, "parallel_tasks", 0):
        return max(1, int(settings.parallel_tasks))
    if settings.backend == "local":
        return max(1, int(settings.local_slots or 1) // max(1, int(settings.threads)))
    return None


def chunk_size(pairs, per_chunk=PAIRS_PER_CHUNK, parallel=None):
    """Pairs per align chunk for a sample of `pairs` pairs: chunks of at most per_chunk pairs, and
    for a small sample a few (MIN_CHUNKS, or as many as run at once when fewer do: a task more than
    the backend runs at once only adds its fixed cost)."""
    pairs = max(1, int(pairs))
    few = min(MIN_CHUNKS, parallel) if parallel else MIN_CHUNKS
    n = max(min(few, -(-pairs // MIN_CHUNK_PAIRS)), -(-pairs // per_chunk))
    return max(1, -(-pairs // n))


def shard_target(pairs, per_call=PAIRS_PER_CALL, parallel=None):
    """About how many call shards: one per per_call pairs; when the backend runs only `parallel`
    tasks at once, as few as fill it, down to shards of MAX_PAIRS_PER_CALL pairs (their memory)."""
    n = max(1, int(round(pairs / per_call)))
    if parallel:
        n = min(n, max(int(parallel), -(-int(pairs) // MAX_PAIRS_PER_CALL)))
    return n


def make_plan(contigs, pairs, regions=None, lanes=1, per_call=PAIRS_PER_CALL, per_chunk=PAIRS_PER_CHUNK,
              chunk_pairs=None, tol=0.1, parallel=None):
    """The plan of a sample of `pairs` read pairs over these contigs (see the module doc). regions:
    ask for about that many call shards instead of sizing them by the pairs; parallel: how many
    tasks of a stage the backend runs at once, when known (parallel_of)."""
    if not contigs:
        raise ValueError("a reference without contigs cannot be planned")
    primary = [c for c in contigs if c.kind == "primary"]
    wp = sum(c.weight for c in primary) or sum(c.length for c in primary) or 1
    wall = sum(max(c.weight, 1) for c in contigs)
    n_target = regions if regions else shard_target(pairs, per_call, parallel)
    target = max(wp / n_target, MIN_REGION_BASES)
    pieces = []
    for c in contigs:
        m = int(round(c.weight / target)) if c.kind == "primary" else 1
        if m >= 2 and c.weight > 1.5 * target:
            m = min(m, c.length)
            bounds = [0] + _cuts(c, m, tol) + [c.length]
        else:
            bounds = [0, c.length]
        for a, b in zip(bounds[:-1], bounds[1:]):
            pieces.append(Region(len(pieces), c.name, a, b, _weight_before(c, b) - _weight_before(c, a)))
    kind = {c.name: c.kind for c in contigs}
    shards = []
    pack = []

    def close():
        if pack:
            w = sum(p.weight for p in pack)
            calls = kind[pack[0].contig] == "primary"
            shards.append(Shard(len(shards), pack[0].index, pack[-1].index, w, pairs * max(w, 1) / wall, calls))
            pack.clear()
    for p in pieces:
        calls = kind[p.contig] == "primary"
        if pack and (kind[pack[0].contig] == "primary") != calls:
            close()
        limit = target if calls else CARRY_FACTOR * target
        if calls and p.weight >= 0.5 * target:
            close()
            pack.append(p)
            close()
            continue
        if pack and (sum(x.weight for x in pack) + p.weight > 1.5 * limit or len(pack) >= MAX_SHARD_INTERVALS):
            close()
        pack.append(p)
        if sum(x.weight for x in pack) >= limit:
            close()
    close()
    cp = chunk_pairs or chunk_size(pairs, per_chunk, parallel)
    return Plan(pieces, shards, int(cp), int(pairs), lanes)


def write_plan_bed(plan, path):
    """The pieces as BED (contig, start, end, shard name), written under a temporary name."""
    import os
    shard_of = {}
    for s in plan.shards:
        for i in range(s.first, s.last + 1):
            shard_of[i] = s.name
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        for r in plan.pieces:
            f.write(f"{r.contig}\t{r.start}\t{r.end}\t{shard_of[r.index]}\n")
    os.replace(tmp, path)


def region_range(contigs, max_regions):
    """(lowest, highest) region count a plan of these contigs accepts."""
    total = sum(c.weight for c in contigs)
    hi = max(len(contigs), min(max_regions, total // MIN_REGION_BASES))
    return len(contigs), hi


def write_bed(regions, path):
    """The plan as BED (contig, start, end, name), written under a temporary name."""
    import os
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        for r in regions:
            f.write(f"{r.contig}\t{r.start}\t{r.end}\t{r.name}\n")
    os.replace(tmp, path)


def read_bed(path):
    regions = []
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith(("#", "track")):
                c, s, e = line.split("\t")[:3]
                regions.append(Region(len(regions), c, int(s), int(e), 0))
    return regions
