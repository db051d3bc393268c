"""Genotype likelihoods: from the pileup (SNPs) or by realigning reads to haplotypes (indels).

A diploid genotype is a pair of alleles (i <= j) in VCF order: (0,0) (0,1) (1,1) (0,2) (1,2) (2,2)...
Its log-likelihood is the sum over reads of log( P(read | allele i)/2 + P(read | allele j)/2 ).

* Pileup sites (an isolated SNP, possibly two alternative bases): P(base | allele) = 1 - e when the
  base is the allele, e/3 otherwise, with e the read's base error combined with its mapping error.
* Haplotype windows (an indel and the alleles near it): a haplotype is the reference around the
  window with a compatible set of the window's alleles in place; P(read | haplotype) is the best
  alignment of the whole read in a band around where it maps (Viterbi: match log(1-e), mismatch
  log(e/3), gap open GAP_OPEN, each further gap base GAP_EXT), from `hap_scores`. Reads that
  disagree with the CIGAR the aligner gave (an indel near a read's end, clipped or written as
  mismatches) are scored on their bases, against haplotypes that carry the nearby alleles too.
Natural logarithms throughout; sums run over reads in their canonical order, so the numbers do
not depend on how the genome was sharded.
"""
import math

import numpy as np

from kernels._numba import jit
from kernels.bamrec import base_at, i32 as _i32, record_layout
from kernels.qualcal import CYCLE_BIN

GAP_OPEN = -10.4        # ln(10^-4.5): an indel error in a read
GAP_EXT = -2.3          # ln(0.1) for every further base of it
LN10 = math.log(10.0)


@jit
def base_error(q, cycle, mapq, qerr):
    """Probability that a base of reported quality q, read at sequencing cycle `cycle`, in a read of
    mapping quality mapq is wrong; qerr[q, cycle // CYCLE_BIN] is the measured error rate
    (kernels.qualcal)."""
    cb = cycle // CYCLE_BIN
    if cb >= qerr.shape[1]:
        cb = qerr.shape[1] - 1
    eb = qerr[q if q < qerr.shape[0] else qerr.shape[0] - 1, cb]
    em = 10.0 ** (-(mapq if mapq < 60 else 60) / 10.0)
    e = eb + em - eb * em
    return e if e < 0.75 else 0.75          # 0.75: the base says nothing (all four equally likely)


@jit
def n_genotypes(k):
    return k * (k + 1) // 2


@jit
def snp_likelihoods(raw, roff, use, pos, mapq, flag, ws, we, site_at, alleles, nall, min_bq, qerr, gl, ad, dp):
    """Pileup genotype log-likelihoods. site_at[x - ws] is the site at position x (-1: none);
    alleles[s, :nall[s]] its allele codes (ref first). gl[s, g] accumulates per genotype in VCF
    order, ad[s, a] the reads showing allele a, dp[s] the reads with a usable base."""
    lp = np.empty(4, np.float64)
    for u in range(use.shape[0]):
        r = use[u]
        c0, ncig, s0, q0, lseq = record_layout(raw, roff[r])
        rp = pos[r]
        qi = 0
        mq = mapq[r]
        rev = (flag[r] & 16) != 0
        for k in range(ncig):
            word = _i32(raw, c0 + 4 * k)
            op = word & 15
            ln = word >> 4
            if op == 0 or op == 7 or op == 8:
                for t in range(ln):
                    x = rp + t
                    if x < ws or x >= we:
                        continue
                    s = site_at[x - ws]
                    if s < 0:
                        continue
                    q = raw[q0 + qi + t]
                    if q < min_bq or q == 255:
                        continue
                    b = base_at(raw, s0, qi + t)
                    if b > 3:
                        continue
                    e = base_error(q, (lseq - 1 - qi - t) if rev else qi + t, mq, qerr)
                    na = nall[s]
                    dp[s] += 1
                    for a in range(na):
                        if alleles[s, a] == b:
                            lp[a] = math.log(1.0 - e)
                            ad[s, a] += 1
                        else:
                            lp[a] = math.log(e / 3.0)
                    g = 0
                    for j in range(na):
                        for i in range(j + 1):
                            m = lp[i] if lp[i] > lp[j] else lp[j]
                            gl[s, g] += m + math.log(0.5 * math.exp(lp[i] - m) + 0.5 * math.exp(lp[j] - m))
                            g += 1
                rp += ln
                qi += ln
            elif op == 1 or op == 4:
                qi += ln
            elif op == 2 or op == 3:
                rp += ln


@jit
def read_vs_hap(read, qual, mq, rev, qerr, L, hap, H, d0, w, M0, M1, I0, I1, D0, D1):
    """Best log-probability of the whole read against hap (free ends on the haplotype), in the band
    of diagonals [d0 - w, d0 + w] (diagonal = haplotype position of read base 0). Scratch rows of
    2w+1 floats."""
    B = 2 * w + 1
    NEGF = -1e300
    for k in range(B):
        j = d0 - w + k          # haplotype position of read base 0 on this diagonal
        M0[k] = NEGF
        I0[k] = NEGF
        D0[k] = NEGF
    best = NEGF
    for i in range(L):
        b = read[i]
        e = base_error(qual[i], (L - 1 - i) if rev else i, mq, qerr)
        lm = math.log(1.0 - e)
        lx = math.log(e / 3.0)
        for k in range(B):
            j = d0 - w + k + i          # haplotype position aligned with read base i
            if j < 0 or j >= H:
                M1[k] = NEGF
                I1[k] = NEGF
                D1[k] = NEGF
                continue
            if b > 3:
                s = 0.0
            elif hap[j] == b:
                s = lm
            else:
                s = lx
            if i == 0:
                prev = 0.0              # the read may start anywhere on the haplotype
            else:
                prev = M0[k]
                if I0[k] > prev:
                    prev = I0[k]
                if D0[k] > prev:
                    prev = D0[k]
            M1[k] = prev + s
            # insertion: read base i not on the haplotype (diagonal k-1 in the next row's terms)
            ins = NEGF
            if i > 0 and k + 1 < B:
                o = M0[k + 1] + GAP_OPEN
                x = I0[k + 1] + GAP_EXT
                ins = o if o > x else x
            I1[k] = ins
        # deletions: haplotype bases skipped after read base i (move along the row)
        for k in range(B):
            D1[k] = NEGF
        for k in range(1, B):
            o = M1[k - 1] + GAP_OPEN
            x = D1[k - 1] + GAP_EXT
            D1[k] = o if o > x else x
        for k in range(B):
            M0[k] = M1[k]
            I0[k] = I1[k]
            D0[k] = D1[k]
    for k in range(B):
        if M0[k] > best:
            best = M0[k]
        if I0[k] > best:
            best = I0[k]
    return best


@jit
def hap_scores(raw, roff, use, pos, ustart, uend, mapq, flag, qerr, win_lo, win_hi, hap_seq, hap_off, hap_start,
               win_hap0, win_nhap, w_extra, max_reads, nreads, scores, sc_off):
    """Every read overlapping window [win_lo[s]-1, win_hi[s]+1) (at most max_reads, in order) aligned
    to each of the window's haplotypes (win_hap0[s] .. +win_nhap[s]-1; haplotype h is
    hap_seq[hap_off[h]:hap_off[h+1]], starting at reference position hap_start[s]): nreads[s] gets
    the number of reads, scores[sc_off[s] + read * nhap + hap] their log-probabilities (sc_off is
    filled here: the caller sizes `scores` for max_reads reads per window). `use` is sorted by
    position; ustart/uend are the reads' unclipped extents."""
    nw = win_lo.shape[0]
    maxd = 0
    for s in range(nw):
        h0 = win_hap0[s]
        base = hap_off[h0 + 1] - hap_off[h0]
        for h in range(h0, h0 + win_nhap[s]):
            d = abs((hap_off[h + 1] - hap_off[h]) - base)
            if d > maxd:
                maxd = d
    wmax = maxd + w_extra
    B = 2 * wmax + 1
    M0 = np.empty(B)
    M1 = np.empty(B)
    I0 = np.empty(B)
    I1 = np.empty(B)
    D0 = np.empty(B)
    D1 = np.empty(B)
    rbuf = np.empty(4096, np.uint8)
    qbuf = np.empty(4096, np.uint8)
    upos = np.empty(use.shape[0], np.int64)
    span = 0
    for u in range(use.shape[0]):
        r = use[u]
        upos[u] = pos[r]
        if uend[r] - ustart[r] > span:
            span = uend[r] - ustart[r]
    off = 0
    for s in range(nw):
        sc_off[s] = off
        a = win_lo[s] - 1
        b = win_hi[s] + 1
        nh = win_nhap[s]
        h0 = win_hap0[s]
        # the band of this window alone (a batch-wide band would make a window's scores depend
        # on which other windows share its batch)
        dmax = 0
        for h in range(h0, h0 + nh):
            d = abs((hap_off[h + 1] - hap_off[h]) - (hap_off[h0 + 1] - hap_off[h0]))
            if d > dmax:
                dmax = d
        w = dmax + w_extra
        first = np.searchsorted(upos, a - span, side="left")
        n = 0
        for u in range(first, use.shape[0]):
            r = use[u]
            if pos[r] >= b or n >= max_reads:
                break
            if uend[r] <= a or ustart[r] >= b:
                continue
            c0, ncig, s0, q0, lseq = record_layout(raw, roff[r])
            if lseq > 4096:
                continue
            for t in range(lseq):
                rbuf[t] = base_at(raw, s0, t)
                qbuf[t] = raw[q0 + t]
            d0 = ustart[r] - hap_start[s]      # read base 0 at its unclipped start; haplotypes share the left flank
            for hh in range(nh):
                h = h0 + hh
                hs = hap_seq[hap_off[h]:hap_off[h + 1]]
                scores[off + n * nh + hh] = read_vs_hap(rbuf, qbuf, mapq[r], (flag[r] & 16) != 0, qerr, lseq, hs,
                                                        hs.shape[0], d0, w, M0, M1, I0, I1, D0, D1)
            n += 1
        nreads[s] = n
        off += n * nh
    sc_off[nw] = off


# ---------------------------------------------------------------- posterior, in numpy

def genotype_table(k):
    """[(i, j)] for k alleles in VCF order."""
    return [(i, j) for j in range(k) for i in range(j + 1)]


def posterior(gl, k, theta):
    """From genotype log-likelihoods (natural log, VCF order) and the heterozygosity theta:
    (best genotype index, QUAL, GQ, PL list). Priors: 0/0 1, 0/a theta, a/a theta/2, a/b theta^2."""
    gts = genotype_table(k)
    prior = np.array([0.0 if (i, j) == (0, 0) else
                      (math.log(theta) if i == 0 else (math.log(theta / 2) if i == j else 2 * math.log(theta)))
                      for i, j in gts])
    lp = gl[:len(gts)] + prior
    m = lp.max()
    z = m + math.log(np.exp(lp - m).sum())
    post = lp - z                                   # natural-log posteriors
    best = int(np.argmax(post))
    qual = -10.0 * post[0] / LN10                   # phred P(0/0)
    others = np.delete(post, best)
    if len(others):
        mo = others.max()
        lo = mo + math.log(np.exp(others - mo).sum())
        gq = min(99, int(round(-10.0 * lo / LN10)))
    else:
        gq = 99
    pl = np.rint(-10.0 * (gl[:len(gts)] - gl[:len(gts)].max()) / LN10).astype(np.int64)
    return best, min(qual, 9999.0), max(gq, 0), [int(x) for x in pl], gts[best]


def posterior_many(gl, k, theta):
    """posterior() for many sites of k alleles at once: gl is (sites, genotypes); returns arrays
    (best genotype index, QUAL, GQ, PL matrix)."""
    gts = genotype_table(k)
    g = len(gts)
    prior = np.array([0.0 if (i, j) == (0, 0) else
                      (math.log(theta) if i == 0 else (math.log(theta / 2) if i == j else 2 * math.log(theta)))
                      for i, j in gts])
    lp = gl[:, :g] + prior
    post = lp - np.logaddexp.reduce(lp, axis=1)[:, None]
    best = np.argmax(post, 1)
    qual = np.minimum(-10.0 * post[:, 0] / LN10, 9999.0)
    others = post.copy()
    others[np.arange(len(best)), best] = -np.inf
    gq = np.clip(np.rint(-10.0 * np.logaddexp.reduce(others, axis=1) / LN10), 0, 99).astype(np.int64)
    pl = np.rint(-10.0 * (gl[:, :g] - gl[:, :g].max(1)[:, None]) / LN10).astype(np.int64)
    return best, qual, gq, pl


# ---------------------------------------------------------------- slow twins (plain Python)

def snp_likelihoods_slow(pileup_bases, alleles, qerr):
    """pileup_bases: [(base, q, cycle, mapq)] at one site -> (gl list, ad list, dp)."""
    k = len(alleles)
    gl = [0.0] * (k * (k + 1) // 2)
    ad = [0] * k
    dp = 0
    for b, q, cyc, mq in pileup_bases:
        if b > 3:
            continue
        e = _err(q, cyc, mq, qerr)
        dp += 1
        p = [(1 - e) if a == b else e / 3 for a in alleles]
        for a, al in enumerate(alleles):
            if al == b:
                ad[a] += 1
        for g, (i, j) in enumerate(genotype_table(k)):
            gl[g] += math.log(0.5 * p[i] + 0.5 * p[j])
    return gl, ad, dp


def _err(q, cycle, mapq, qerr):
    eb = float(qerr[min(q, qerr.shape[0] - 1), min(cycle // CYCLE_BIN, qerr.shape[1] - 1)])
    em = 10.0 ** (-min(mapq, 60) / 10.0)
    return min(eb + em - eb * em, 0.75)


def read_vs_hap_slow(read, qual, mq, rev, qerr, hap, d0, w):
    """Every alignment of the read to the haplotype within the band, by a full memoised recursion
    over (read base, haplotype position, state) written plainly."""
    import functools
    L, H = len(read), len(hap)
    NEG = -1e300

    def inband(i, j):
        return 0 <= j < H and d0 - w <= j - i <= d0 + w

    def sub(i, j):
        if read[i] > 3:
            return 0.0
        e = _err(qual[i], (L - 1 - i) if rev else i, mq, qerr)
        return math.log(1 - e) if hap[j] == read[i] else math.log(e / 3)

    @functools.lru_cache(maxsize=None)
    def M(i, j):            # read base i aligned to hap j, best score of read[:i+1]
        if not inband(i, j):
            return NEG
        if i == 0:
            return sub(0, j)
        return max(M(i - 1, j - 1), I(i - 1, j - 1), D(i - 1, j - 1)) + sub(i, j)

    @functools.lru_cache(maxsize=None)
    def I(i, j):            # read base i inserted, last haplotype base used j-1 ... on diagonal of (i, j)
        if not inband(i, j) or i == 0:
            return NEG
        return max(M(i - 1, j) + GAP_OPEN, I(i - 1, j) + GAP_EXT)

    @functools.lru_cache(maxsize=None)
    def D(i, j):            # after read base i at hap j-(gap): hap bases skipped, now at diagonal (i, j)
        if not inband(i, j):
            return NEG
        return max(M(i, j - 1) + GAP_OPEN, D(i, j - 1) + GAP_EXT)

    best = NEG
    for j in range(H):
        best = max(best, M(L - 1, j), I(L - 1, j))
    return best
