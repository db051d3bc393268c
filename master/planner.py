"""The region planner: the frame splitter of the farm.

A sample is called region by region. `plan(contigs, k)` cuts the genome into k contiguous
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
    """A contig's length and its N runs (sorted, disjoint, half-open [nstart, nend))."""
    name: str
    length: int
    nstarts: np.ndarray
    nends: np.ndarray

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
    """Contigs (with their N runs) of a genefarm index (kernels.index), read memory-mapped."""
    from kernels import index as gindex
    idx = gindex.load(prefix)
    out = []
    for c in idx.meta["contigs"]:
        s, e = n_runs(idx.seq[c["offset"]:c["offset"] + c["length"]])
        out.append(Contig(c["name"], int(c["length"]), s, e))
    return out


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
