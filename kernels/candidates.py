"""Candidates: every read's best candidate alignments, the first phase of a batch (threads over reads).

For each read: minimizer hits (seed.py) in two tiers (rare minimizers first; all up to MAX_OCC
when they place too little of the read), loci (chain.py), and each of the best loci aligned
(extend.py: the ungapped fast path; the banded affine-gap alignment of pair.align_band when the
seeds or the mismatches say there is an indel). Candidates of one locus found twice are merged,
and a read's candidates are sorted best first (score, then seed coverage, then position).
Output: cand[r, :ncand[r]] (types.CAND), nloci[r], rep[r] (read bases covered only by repeats).
"""
import numpy as np

from kernels._numba import jit, pjit, prange
from kernels.chain import cluster, top_loci
from kernels.dna import COMPLEMENT
from kernels.extend import NEG, ungapped
from kernels.pair import align_band
from kernels.scoring import (CLUSTER_GAP, DROP_RATIO, LOW_OCC, MATCH, MAX_CAND, MAX_HITS, MAX_OCC, MISMATCH,
                             RESCUE_MIN, TIER_COVER)
from kernels.seed import collect_hits
from kernels.types import CAND, LOCUS

MAX_SPREAD = 192          # widest spread of seed diagonals one gapped alignment covers
MAX_LOCI = 8192           # loci kept per read before ranking
EXTRA_CAND = 4            # candidate slots for rescued alignments
NCHUNKS = 64              # work items per batch handed to the threads


@jit
def rc_into(q, L, out):
    for i in range(L):
        out[i] = COMPLEMENT[q[L - 1 - i]]


@jit
def contig_of(refoff, gpos):
    t = np.searchsorted(refoff, gpos, side="right") - 1
    if t < 0:
        t = 0
    if t > refoff.shape[0] - 2:
        t = refoff.shape[0] - 2
    return t


@jit
def _better(a, b):
    """Candidate order: score, then seed coverage, then position."""
    if a.score != b.score:
        return a.score > b.score
    if a.cov != b.cov:
        return a.cov > b.cov
    return a.rb < b.rb


@jit
def sort_dedup(cr, n, tmp):
    """Sort a read's candidates best first, drop those that are the same locus as a better one.
    tmp: a one-record CAND array (a record taken from an array is a view, not a copy)."""
    for i in range(1, n):
        j = i
        while j > 0 and _better(cr[j], cr[j - 1]):
            tmp[0] = cr[j - 1]
            cr[j - 1] = cr[j]
            cr[j] = tmp[0]
            j -= 1
    m = 0
    for i in range(n):
        dup = False
        for j in range(m):
            a = cr[i]
            b = cr[j]
            if a.tid == b.tid and a.rel == b.rel:
                ov = min(a.re, b.re) - max(a.rb, b.rb)
                short = min(a.re - a.rb, b.re - b.rb)
                if ov > 0 and 20 * ov >= 19 * short:     # the same alignment, not a shifted copy
                    dup = True
                    break
        if not dup:
            if m != i:
                cr[m] = cr[i]
            m += 1
    return m


@pjit
def candidates_batch(seq, roff, ref, refoff, mzb, mzk, mzo, mzp, bits, k, w, p, maxlen, bmax,
                     cand, ncand, nloci, rep):
    """Phase 1: every read's candidate alignments (cand[r, :ncand[r]], best first)."""
    nreads = roff.shape[0] - 1
    chunk = (nreads + NCHUNKS - 1) // NCHUNKS
    match = p[MATCH]
    for c in prange(NCHUNKS):
        sk_h = np.empty(maxlen + 1, np.uint64)
        sk_p = np.empty(maxlen + 1, np.int64)
        sk_s = np.empty(maxlen + 1, np.uint8)
        sk_x = np.empty(maxlen + 1, np.uint64)
        order = np.empty(maxlen + 1, np.int64)
        rep_mark = np.empty(maxlen + 1, np.uint8)
        hits = np.empty(p[MAX_HITS] + 1, np.uint64)
        qs = np.empty(p[MAX_HITS] + 1, np.int64)
        loci = np.empty(MAX_LOCI, LOCUS)
        keys = np.empty(MAX_LOCI, np.int64)
        lorder = np.empty(p[MAX_CAND], np.int64)
        rcq = np.empty(maxlen + 1, np.uint8)
        ctmp = np.empty(1, CAND)
        Hp = np.empty(bmax, np.int32)
        Hc = np.empty(bmax, np.int32)
        Fp = np.empty(bmax, np.int32)
        Fc = np.empty(bmax, np.int32)
        tb = np.empty((maxlen + 1) * bmax, np.uint8)
        cig = np.empty(2 * maxlen + 8, np.uint32)
        rops = np.empty(2 * maxlen + 8, np.int64)
        rlens = np.empty(2 * maxlen + 8, np.int64)
        for r in range(c * chunk, min(nreads, (c + 1) * chunk)):
            s0 = roff[r]
            L = roff[r + 1] - s0
            ncand[r] = 0
            nloci[r] = 0
            rep[r] = 0
            if L < k:
                continue
            q = seq[s0:s0 + L]
            rc_into(q, L, rcq)
            # two tiers: rare minimizers first; all up to MAX_OCC when they place too little of the read
            use = p[LOW_OCC]
            while True:
                nh, rb_ = collect_hits(q, L, k, w, mzb, mzk, mzo, mzp, bits, use, p[MAX_OCC], p[MAX_HITS],
                                       sk_h, sk_p, sk_s, sk_x, order, rep_mark, hits)
                nl = cluster(hits, nh, k, p[CLUSTER_GAP], loci, qs)
                m = top_loci(loci, nl, p[MAX_CAND], lorder, keys)
                if use >= p[MAX_OCC] or (m > 0 and 100 * loci[lorder[0]].cov >= p[TIER_COVER] * L):
                    break
                use = p[MAX_OCC]
            rep[r] = rb_
            nloci[r] = nl
            n = 0
            for t in range(m):
                lc = loci[lorder[t]]
                if 100 * lc.cov < p[DROP_RATIO] * loci[lorder[0]].cov:
                    break                    # loci are in decreasing coverage
                qo = q if lc.rel == 0 else rcq
                dlo = lc.dlo
                dhi = lc.dhi if lc.dhi - lc.dlo <= MAX_SPREAD else lc.dlo + MAX_SPREAD
                tid = contig_of(refoff, dlo + L // 2)
                lo = refoff[tid]
                hi = refoff[tid + 1]
                gapped = 0
                score = NEG
                rb = 0
                re = 0
                qb = 0
                qe = 0
                if dhi == dlo:
                    score, qb, qe = ungapped(qo, L, ref, dlo, lo, hi, p)
                    rb = dlo + qb
                    re = dlo + qe
                if dhi != dlo or score < L * match - 2 * (match + p[MISMATCH]):
                    s2, rb2, re2, qb2, qe2, _, _ = align_band(qo, L, ref, lo, hi, dlo, dhi, p,
                                                              Hp, Hc, Fp, Fc, tb, cig, rops, rlens)
                    if s2 > score:
                        score, rb, re, qb, qe = s2, rb2, re2, qb2, qe2
                        gapped = 1
                if score < p[RESCUE_MIN]:
                    continue
                cd = cand[r, n]
                cd.score = score
                cd.rb = rb
                cd.re = re
                cd.qb = qb
                cd.qe = qe
                cd.gdlo = dlo
                cd.gdhi = dhi
                cd.cov = lc.cov
                cd.tid = tid
                cd.rel = lc.rel
                cd.gapped = gapped
                n += 1
            ncand[r] = sort_dedup(cand[r], n, ctmp)


