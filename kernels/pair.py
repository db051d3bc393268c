"""Pairing: the insert-size model, mate rescue, the choice of a pair and mapping qualities.

* Insert sizes are learnt per batch from pairs whose mates both have one clearly best locus on
  the same contig in forward-reverse orientation (robust: quartiles, outliers dropped), so the
  model does not depend on how many ranks or threads share the work.
* Pair score = both alignment scores + log-likelihood of the insert size in score units; a pair
  that is not proper scores the sum minus the unpaired penalty. The best option wins.
* Rescue: when a read's mate has no locus near it, the mate is searched in the window where the
  insert-size model puts it (11-mer votes for a diagonal, then the banded alignment). This
  places reads whose own seeds were all repetitive.
* MAPQ is the phred-scaled probability that the chosen placement is wrong, given the scores of
  the alternatives found: one alternative d score units worse gives about 6 * d (one score unit
  is a factor of 4 in likelihood with these scores), n equal alternatives lower it by 10 log10(n).
  A read whose seeds were mostly repetitive (alternatives not all seen) gets less.
"""
import math

import numpy as np

from kernels._numba import jit
from kernels.extend import NEG, dp_fill, dp_traceback
from kernels.scoring import BAND

CAND = np.dtype([("rb", np.int64), ("re", np.int64), ("gdlo", np.int64), ("gdhi", np.int64),
                 ("score", np.int32), ("qb", np.int32), ("qe", np.int32), ("cov", np.int32),
                 ("tid", np.int32), ("rel", np.uint8), ("gapped", np.uint8)], align=True)
"""A read's candidate alignment:
    rb, re     reference interval of the aligned part (global coordinates, half-open)
    gdlo, gdhi diagonals of its seeds (global; the gapped alignment uses them +- BAND)
    score      alignment score;  qb, qe  aligned part of the oriented read (the rest clipped)
    cov        read bases covered by its seeds;  tid  contig;  rel  0 forward, 1 reverse
    gapped     1 if found by the banded alignment (its CIGAR needs the traceback)"""

# insert-size model, as a float64 array [valid, mean, std, low, high]
IS_VALID, IS_MEAN, IS_STD, IS_LOW, IS_HIGH = range(5)
MIN_PAIRS_FOR_MODEL = 10
RESCUE_K = 11


def insert_model(cand, ncand, lens, max_insert=10000):
    """Learn the insert-size model from a batch's candidates (read 2i and 2i+1 are mates)."""
    c0 = cand[0::2, 0]
    c1 = cand[1::2, 0]
    n0, n1 = ncand[0::2], ncand[1::2]
    one0 = (n0 == 1) | ((n0 > 1) & (cand[0::2, 1]["score"] <= cand[0::2, 0]["score"] - 10))
    one1 = (n1 == 1) | ((n1 > 1) & (cand[1::2, 1]["score"] <= cand[1::2, 0]["score"] - 10))
    ok = (n0 > 0) & (n1 > 0) & one0 & one1 & (c0["tid"] == c1["tid"]) & (c0["rel"] != c1["rel"])
    fwd_first = c0["rel"] == 0
    L0, L1 = lens[0::2], lens[1::2]
    start = np.where(fwd_first, c0["rb"] - c0["qb"], c1["rb"] - c1["qb"])
    end = np.where(fwd_first, c1["re"] + (L1 - c1["qe"]), c0["re"] + (L0 - c0["qe"]))
    isz = (end - start)[ok]
    isz = isz[(isz > 0) & (isz <= max_insert)]
    return insert_model_from_sizes(isz)


def insert_model_from_sizes(isz):
    """[valid, mean, std, low, high] from observed insert sizes (bwa mem's robust recipe)."""
    model = np.zeros(5, np.float64)
    if len(isz) < MIN_PAIRS_FOR_MODEL:
        return model
    p25, p50, p75 = np.percentile(isz, [25, 50, 75])
    iqr = p75 - p25
    keep = isz[(isz >= p25 - 2 * iqr) & (isz <= p75 + 2 * iqr)]
    mean = float(keep.mean())
    std = max(float(keep.std()), 1.0)
    low = min(p25 - 3 * iqr, mean - 4 * std)
    high = max(p75 + 3 * iqr, mean + 4 * std)
    model[:] = (1.0, mean, std, max(1.0, low), high)
    return model


@jit
def pair_bonus(isize, model, match):
    """Log-likelihood of an insert size in score units (0.721 = 1/ln 4: one unit = a factor of 4)."""
    z = abs(isize - model[IS_MEAN]) / model[IS_STD]
    pr = 2.0 * math.erfc(z * 0.7071067811865476)
    if pr < 1e-300:
        pr = 1e-300
    return 0.721 * math.log(pr) * match


@jit
def proper_insert(a, La, b, Lb, model):
    """Insert size if candidates a (len La) and b are a forward-reverse pair within the model's
    bounds, else -1."""
    if a.tid != b.tid or a.rel == b.rel:
        return -1
    if a.rel == 0:
        start = a.rb - a.qb
        end = b.re + (Lb - b.qe)
    else:
        start = b.rb - b.qb
        end = a.re + (La - a.qe)
    isz = end - start
    if isz < model[IS_LOW] or isz > model[IS_HIGH]:
        return -1
    return isz


@jit
def phred_wrong(p_wrong):
    """-10 log10 of the probability that the best of the options is wrong, given the summed
    relative likelihood p_wrong of the others (best = 1)."""
    if p_wrong <= 0.0:
        return 60.0
    return -10.0 * math.log10(p_wrong / (1.0 + p_wrong))


@jit
def mapq_se(c, L, score_sub, n_sub, rep, match, mismatch):
    """Single-read mapping quality of candidate c (bwa mem's estimate): score_sub is the best
    other locus (0 if none), n_sub the loci within one mismatch of c, rep the repetitive bases."""
    sub = score_sub if score_sub > 19 * match else 19 * match
    if sub >= c.score:
        return 0
    alen = c.qe - c.qb
    if alen < 1:
        return 0
    identity = 1.0 - (alen * match - c.score) / (match + mismatch) / alen
    cov = c.cov if c.cov > 1 else 2
    q = int(30.0 * (1.0 - sub / c.score) * math.log(cov) + 0.499)
    if identity < 0.95:
        q = int(q * identity * identity + 0.499)
    if n_sub > 0:
        q -= int(4.343 * math.log(n_sub + 1) + 0.499)
    if q > 60:
        q = 60
    if q < 0:
        q = 0
    return int(q * (1.0 - rep / L) + 0.499)


@jit
def rescue(q, L, ref, ws, we, p, keys_w, keys_q, votes, Hp, Hc, Fp, Fc, tb, cig, rops, rlens):
    """Search oriented read q[:L] in ref[ws:we]. Returns (score, rb, re, qb, qe, gdlo, gdhi);
    score NEG if nothing was found. Scratch: keys_w >= we-ws, keys_q >= L, votes >= we-ws+L+1."""
    k = RESCUE_K
    W = we - ws
    if W < k or L < k:
        return NEG, 0, 0, 0, 0, 0, 0
    mask = (1 << (2 * k)) - 1
    nw = 0
    code = 0
    run = 0
    for i in range(W):
        c = ref[ws + i]
        if c > 3:
            run = 0
            continue
        code = ((code << 2) | c) & mask
        run += 1
        if run >= k:
            keys_w[nw] = (np.int64(code) << 32) | (i - k + 1)
            nw += 1
    nq = 0
    code = 0
    run = 0
    for i in range(L):
        c = q[i]
        if c > 3:
            run = 0
            continue
        code = ((code << 2) | c) & mask
        run += 1
        if run >= k:
            keys_q[nq] = (np.int64(code) << 32) | (i - k + 1)
            nq += 1
    if nw == 0 or nq == 0:
        return NEG, 0, 0, 0, 0, 0, 0
    keys_w[:nw].sort()
    keys_q[:nq].sort()
    nv = W + L + 1
    for t in range(nv):
        votes[t] = 0
    a = 0
    b = 0
    while a < nw and b < nq:
        ka = keys_w[a] >> 32
        kb = keys_q[b] >> 32
        if ka < kb:
            a += 1
        elif kb < ka:
            b += 1
        else:
            a2 = a
            while a2 < nw and (keys_w[a2] >> 32) == ka:
                a2 += 1
            b2 = b
            while b2 < nq and (keys_q[b2] >> 32) == kb:
                b2 += 1
            if (a2 - a) * (b2 - b) <= 64:      # a k-mer repeated all over the window says nothing
                for u in range(a, a2):
                    for v in range(b, b2):
                        d = (keys_w[u] & 0xFFFFFFFF) - (keys_q[v] & 0xFFFFFFFF)
                        votes[d + L] += 1
            a = a2
            b = b2
    best = 0
    bd = 0
    for t in range(nv):
        if votes[t] > best:
            best = votes[t]
            bd = t
    if best < 2:
        return NEG, 0, 0, 0, 0, 0, 0
    # band: diagonals near the best one that also have support (an indel between seeds)
    dlo = bd
    dhi = bd
    lim = best // 2 if best // 2 > 2 else 2
    for t in range(max(0, bd - 64), min(nv, bd + 65)):
        if votes[t] >= lim:
            if t < dlo:
                dlo = t
            if t > dhi:
                dhi = t
    gdlo = ws + dlo - L
    gdhi = ws + dhi - L
    return align_band(q, L, ref, ws, we, gdlo, gdhi, p, Hp, Hc, Fp, Fc, tb, cig, rops, rlens)


@jit
def align_band(q, L, ref, lo, hi, gdlo, gdhi, p, Hp, Hc, Fp, Fc, tb, cig, rops, rlens):
    """Banded alignment of oriented read q[:L] around global diagonals [gdlo, gdhi] (+- BAND),
    inside the contig [lo, hi). Returns (score, rb, re, qb, qe, gdlo, gdhi) and leaves the CIGAR
    (with soft clips) in cig[:n] -- n is not returned; callers needing it call align_cigar."""
    band = p[BAND]
    ws = gdlo - band if gdlo - band > lo else lo
    we = gdhi + L + band if gdhi + L + band < hi else hi
    if we - ws < 1:
        return NEG, 0, 0, 0, 0, gdlo, gdhi
    W = we - ws
    wdlo = gdlo - band - ws
    wdhi = gdhi + band - ws
    score, ei, ek = dp_fill(q, L, ref, ws, W, wdlo, wdhi, p, Hp, Hc, Fp, Fc, tb)
    if score <= NEG // 2:
        return NEG, 0, 0, 0, 0, gdlo, gdhi
    n, j0, qb = dp_traceback(tb, wdhi - wdlo + 1, wdlo, L, ei, ek, cig, rops, rlens)
    ej = ei + wdlo + ek
    return score, ws + j0, ws + ej, qb, ei, gdlo, gdhi


@jit
def align_cigar(q, L, ref, lo, hi, gdlo, gdhi, p, Hp, Hc, Fp, Fc, tb, cig, rops, rlens):
    """As align_band, returning (score, rb, n_cigar_ops); the CIGAR is in cig[:n]."""
    band = p[BAND]
    ws = gdlo - band if gdlo - band > lo else lo
    we = gdhi + L + band if gdhi + L + band < hi else hi
    W = we - ws
    wdlo = gdlo - band - ws
    wdhi = gdhi + band - ws
    score, ei, ek = dp_fill(q, L, ref, ws, W, wdlo, wdhi, p, Hp, Hc, Fp, Fc, tb)
    n, j0, qb = dp_traceback(tb, wdhi - wdlo + 1, wdlo, L, ei, ek, cig, rops, rlens)
    return score, ws + j0, n


# ---------------------------------------------------------------- slow twins (plain Python)

def pair_bonus_slow(isize, mean, std, match=1):
    z = abs(isize - mean) / std
    return 0.721 * math.log(max(2.0 * (1.0 - math.erf(z / math.sqrt(2.0))), 1e-300)) * match


def insert_model_slow(sizes):
    """The same recipe written with the statistics module."""
    import statistics
    sizes = sorted(sizes)
    if len(sizes) < MIN_PAIRS_FOR_MODEL:
        return [0.0] * 5
    qs = np.percentile(sizes, [25, 50, 75])
    iqr = qs[2] - qs[0]
    keep = [s for s in sizes if qs[0] - 2 * iqr <= s <= qs[2] + 2 * iqr]
    mean = statistics.fmean(keep)
    std = max(statistics.pstdev(keep), 1.0)
    return [1.0, mean, std, max(1.0, min(qs[0] - 3 * iqr, mean - 4 * std)), max(qs[2] + 3 * iqr, mean + 4 * std)]
