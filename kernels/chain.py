"""Chaining: sorted seed hits grouped into candidate loci, the best ones kept for extension.

Hits on one diagonal form a run. Runs (in diagonal order) join the current locus when they are
on the same strand, within `gap` diagonals of it, and cover a different part of the read: that
is an indel (its length shifts the diagonal), seen from both sides. A run covering the same part
of the read as the locus is another copy of a repeat (a tandem copy, a paralog) and starts a new
locus, so that every copy is aligned and scored and the mapping quality sees the alternatives.
A locus is ranked by its seed coverage: read bases covered by its k-mers.

LOCUS (one record per locus):
    rel    relative strand (see kernels.seed)
    dlo    lowest diagonal of its hits (reference position of the oriented read's first base)
    dhi    highest diagonal
    qlo    first read base covered by its k-mers;  qhi  one past the last
    nhits  number of hits
    cov    read bases covered by the hits' k-mers
"""
import numpy as np

from kernels._numba import jit
from kernels.seed import hit_diag, hit_qo, hit_rel

LOCUS = np.dtype([("dlo", np.int64), ("dhi", np.int64), ("qlo", np.int32), ("qhi", np.int32),
                  ("nhits", np.int32), ("cov", np.int32), ("rel", np.uint8)], align=True)


@jit
def _coverage(hits, a, b, k, qs):
    """Union length of [qo, qo+k) over hits[a:b]; qs is scratch of at least b-a int64."""
    n = b - a
    for t in range(n):
        qs[t] = hit_qo(hits[a + t])
    if n > 1:
        qs[:n].sort()
    cov = 0
    end = -1
    for t in range(n):
        s = qs[t]
        e = s + k
        if s >= end:
            cov += k
        elif e > end:
            cov += e - end
        if e > end:
            end = e
    return cov


@jit
def cluster(hits, nh, k, gap, loci, qs):
    """Group hits[:nh] (sorted) into loci; returns the number of loci written."""
    n = 0
    a = 0
    cap = loci.shape[0]
    start = 0          # first hit of the current locus
    while a < nh:
        rel = hit_rel(hits[a])
        d = hit_diag(hits[a])
        b = a + 1
        while b < nh and hits[b] >> np.uint64(16) == hits[a] >> np.uint64(16):   # same rel and diagonal
            b += 1
        rq0 = hit_qo(hits[a])                 # hits of a run are sorted by read position
        rq1 = hit_qo(hits[b - 1]) + k
        merged = False
        if n > 0:
            L = loci[n - 1]
            ov = min(L.qhi, rq1) - max(L.qlo, rq0)
            if L.rel == rel and d - L.dhi <= gap and 2 * ov < k:
                L.dhi = d
                L.qlo = min(L.qlo, rq0)
                L.qhi = max(L.qhi, rq1)
                L.nhits += b - a
                merged = True
        if not merged:
            if n > 0:
                loci[n - 1].cov = _coverage(hits, start, a, k, qs)
            if n == cap:
                return n
            L = loci[n]
            L.rel = rel
            L.dlo = d
            L.dhi = d
            L.qlo = rq0
            L.qhi = rq1
            L.nhits = b - a
            start = a
            n += 1
        a = b
    if n > 0:
        loci[n - 1].cov = _coverage(hits, start, nh, k, qs)
    return n


@jit
def top_loci(loci, n, m, order, keys):
    """Indices of the best min(n, m) loci into `order`: by coverage, then number of hits, then
    locus order (strand, diagonal). keys is int64 scratch of at least n. Returns how many."""
    for i in range(n):
        keys[i] = -((np.int64(loci[i].cov) << 32) | np.int64(loci[i].nhits))
    idx = np.argsort(keys[:n], kind="mergesort")
    keep = m if m < n else n
    for t in range(keep):
        order[t] = idx[t]
    return keep


# ---------------------------------------------------------------- slow twin (plain Python)

def cluster_slow(hits, k, gap):
    """hits: sorted [(rel, diag, qo)] -> [(rel, dlo, dhi, nhits, cov)], the rule written plainly."""
    runs = []
    for h in hits:
        if runs and runs[-1][0][:2] == h[:2]:
            runs[-1].append(h)
        else:
            runs.append([h])
    loci = []   # each: list of runs
    for run in runs:
        rq0, rq1 = run[0][2], run[-1][2] + k
        if loci:
            cur = loci[-1]
            qlo = min(r[0][2] for r in cur)
            qhi = max(r[-1][2] + k for r in cur)
            same_strand = cur[-1][0][0] == run[0][0]
            near = run[0][1] - cur[-1][0][1] <= gap
            if same_strand and near and 2 * (min(qhi, rq1) - max(qlo, rq0)) < k:
                cur.append(run)
                continue
        loci.append([run])
    res = []
    for runs_ in loci:
        allh = [h for r in runs_ for h in r]
        covered = set()
        for _, _, qo in allh:
            covered.update(range(qo, qo + k))
        res.append((allh[0][0], runs_[0][0][1], runs_[-1][0][1], len(allh), len(covered)))
    return res


def top_loci_slow(loci, m):
    """loci as from cluster_slow -> indices of the best m."""
    idx = sorted(range(len(loci)), key=lambda i: (-loci[i][4], -loci[i][3], i))
    return idx[:m]
