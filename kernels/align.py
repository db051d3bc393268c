"""Short-read paired-end alignment: seeds -> loci -> extension -> pairing -> BAM.

    python -m kernels.align PREFIX R1.fq[.gz] R2.fq[.gz] -o OUT.bam [-t THREADS] [-R '@RG\\tID:x\\tSM:y']
    python -m kernels.align PREFIX R1 R2 --regions REGIONS.bed --parts OUT   (OUT.rNNNN.bam per region)
    mpiexec -n K python -m kernels.align ...      (ranks split the batches; same records as 1 rank)

Reads go in batches of pairs (fixed size, so the output does not depend on ranks or threads):
1. candidates (threads over reads): minimizer hits (seed.py), loci (chain.py), each of the best
   loci aligned (extend.py: ungapped fast path, banded affine-gap alignment when the seeds or the
   mismatches say there is an indel), duplicates of one locus merged;
2. the batch's insert-size model (pair.py);
3. pairs (threads over pairs): mate rescue, the best pair or the best single placements, MAPQ,
   CIGAR, flags and mate fields;
4. records encoded (bam.py) and handed to the BGZF writer thread while the next batch aligns.
The BAM is written under a temporary name and renamed when complete. With K ranks, each batch
goes to the rank that asks for it first, which writes it as one part file, and rank 0 joins them in batch
order (samtools cat, through pysam). Rank 0 reads the input once and hands batches to whichever
rank asks (kernels.mpiwork).
"""
import argparse
import json
import os
import shlex
import shutil
import sys
import time

import numpy as np

from kernels import __version__
from kernels import bam, index as gindex, mpiwork, qualcal
from kernels._numba import jit, note_compile, pjit, prange, set_threads
from kernels.chain import LOCUS, cluster, top_loci
from kernels.dna import COMPLEMENT
from kernels.errors import InputError, run_cli
from kernels.bam import ref_span
from kernels.extend import NEG, cigar_ungapped, ungapped
from kernels.fastq import PairedReader
from kernels.regions import part_paths, read_regions
from kernels.pair import (CAND, IS_VALID, align_band, align_cigar, insert_model, mapq_se,
                          pair_bonus, phred_wrong, proper_insert, rescue)
from kernels.scoring import (BAND, CLUSTER_GAP, DROP_RATIO, LOW_OCC, MATCH, MAX_CAND, MAX_HITS, MAX_OCC,
                             MIN_SCORE, MISMATCH, RESCUE_MIN, TIER_COVER, UNPAIRED, params)
from kernels.seed import collect_hits

BATCH_PAIRS = 10000
MAX_SPREAD = 192          # widest spread of seed diagonals one gapped alignment covers
MAX_LOCI = 8192           # loci kept per read before ranking
EXTRA_CAND = 4            # candidate slots for rescued alignments
NCHUNKS = 64              # work items per batch handed to the threads


@jit
def _rc_into(q, L, out):
    for i in range(L):
        out[i] = COMPLEMENT[q[L - 1 - i]]


@jit
def _contig_of(refoff, gpos):
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
def _sort_dedup(cr, n, tmp):
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
            _rc_into(q, L, rcq)
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
                tid = _contig_of(refoff, dlo + L // 2)
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
            ncand[r] = _sort_dedup(cand[r], n, ctmp)


@jit
def _name_hash(names, a, b):
    h = np.uint64(14695981039346656037)
    for t in range(a, b):
        h = (h ^ np.uint64(names[t])) * np.uint64(1099511628211)
    return h


@jit
def read_name_hashes(names, noff):
    """FNV-1a hash of every read's name (both mates of a pair share it), as kernels.bamread has it."""
    n = noff.shape[0] - 1
    out = np.empty(2 * n, np.uint64)
    for i in range(n):
        h = _name_hash(names, noff[i], noff[i + 1])
        out[2 * i] = h
        out[2 * i + 1] = h
    return out


@jit
def _has_proper(x, Lx, cr, n, Ly, model):
    for t in range(n):
        if proper_insert(x, Lx, cr[t], Ly, model) >= 0:
            return True
    return False


@jit
def _rescue_into(x, Lx, ymate_q, Ly, cy, ny, cap, ref, refoff, model, p, keys_w, keys_q, votes,
                 Hp, Hc, Fp, Fc, tb, cig, rops, rlens):
    """Look for mate y near candidate x; append it to cy (returns the new count)."""
    lo = refoff[x.tid]
    hi = refoff[x.tid + 1]
    low = int(model[3])
    high = int(model[4])
    if x.rel == 0:
        s = x.rb - x.qb
        ws = s + low - Ly
        we = s + high
    else:
        e = x.re + (Lx - x.qe)
        ws = e - high
        we = e - low + Ly
    if ws < lo:
        ws = lo
    if we > hi:
        we = hi
    if we - ws < Ly // 2:
        return ny
    sc, rb, re, qb, qe, gdlo, gdhi = rescue(ymate_q, Ly, ref, ws, we, p, keys_w, keys_q, votes,
                                            Hp, Hc, Fp, Fc, tb, cig, rops, rlens)
    if sc < p[RESCUE_MIN]:
        return ny
    # the same locus already a candidate?
    for t in range(ny):
        b = cy[t]
        if b.tid == x.tid and b.rel != x.rel and min(b.re, re) - max(b.rb, rb) > 0:
            return ny
    slot = ny
    if ny >= cap:
        # replace the worst candidate if the rescued one is better
        slot = ny - 1
        if cy[slot].score >= sc:
            return ny
    c = cy[slot]
    c.score = sc
    c.rb = rb
    c.re = re
    c.qb = qb
    c.qe = qe
    c.gdlo = gdlo
    c.gdhi = gdhi
    c.cov = (qe - qb) // 2
    c.tid = x.tid
    c.rel = 1 - x.rel
    c.gapped = 1
    return slot + 1 if slot == ny else ny


@jit
def _sub_of(cr, n, chosen):
    """(best other score, number of others within one mismatch of the chosen)."""
    sub = 0
    nsub = 0
    s = cr[chosen].score
    for t in range(n):
        if t == chosen:
            continue
        if cr[t].score > sub:
            sub = cr[t].score
        if cr[t].score >= s - 5:
            nsub += 1
    return sub, nsub


@jit
def _pick_best(cr, n, h):
    """Index of the best candidate; among equal scores, one chosen by the read-name hash."""
    if n == 0:
        return -1
    best = cr[0].score
    ties = 0
    for t in range(n):
        if cr[t].score == best:
            ties += 1
    pick = np.int64(h % np.uint64(ties))
    for t in range(n):
        if cr[t].score == best:
            if pick == 0:
                return t
            pick -= 1
    return 0


@pjit
def pairs_batch(seq, roff, names, noff, ref, refoff, p, model, bmax, maxlen, cand, ncand, rep,
                aln, cigs):
    """Phase 3: for every pair, rescue, choose the placements, and fill aln/cigs."""
    npairs = noff.shape[0] - 1
    chunk = (npairs + NCHUNKS - 1) // NCHUNKS
    cap = cand.shape[1]
    match = p[MATCH]
    mism = p[MISMATCH]
    LN4 = np.log(4.0)
    for c in prange(NCHUNKS):
        rcq0 = np.empty(maxlen + 1, np.uint8)
        rcq1 = np.empty(maxlen + 1, np.uint8)
        wmax = int(model[4]) + 2 * maxlen + 64 if model[0] > 0 else 16
        keys_w = np.empty(wmax, np.int64)
        keys_q = np.empty(maxlen + 1, np.int64)
        votes = np.empty(wmax + maxlen + 2, np.int32)
        Hp = np.empty(bmax, np.int32)
        Hc = np.empty(bmax, np.int32)
        Fp = np.empty(bmax, np.int32)
        Fc = np.empty(bmax, np.int32)
        tb = np.empty((maxlen + 1) * bmax, np.uint8)
        cig = np.empty(2 * maxlen + 8, np.uint32)
        rops = np.empty(2 * maxlen + 8, np.int64)
        rlens = np.empty(2 * maxlen + 8, np.int64)
        ps = np.empty(cap * cap, np.float64)
        pa = np.empty(cap * cap, np.int64)
        pb = np.empty(cap * cap, np.int64)
        ctmp = np.empty(1, CAND)
        for i in range(c * chunk, min(npairs, (c + 1) * chunk)):
            r0 = 2 * i
            r1 = r0 + 1
            L0 = roff[r0 + 1] - roff[r0]
            L1 = roff[r1 + 1] - roff[r1]
            q0 = seq[roff[r0]:roff[r0 + 1]]
            q1 = seq[roff[r1]:roff[r1 + 1]]
            _rc_into(q0, L0, rcq0)
            _rc_into(q1, L1, rcq1)
            c0 = cand[r0]
            c1 = cand[r1]
            n0 = ncand[r0]
            n1 = ncand[r1]
            h = _name_hash(names, noff[i], noff[i + 1])
            # --- mate rescue, both ways (from the original candidates only)
            if model[IS_VALID] > 0:
                m0 = n0
                m1 = n1
                for t in range(min(m0, 3)):
                    x = c0[t]
                    if x.score < c0[0].score - p[UNPAIRED]:
                        break
                    if not _has_proper(x, L0, c1, n1, L1, model):
                        yq = q1 if x.rel == 1 else rcq1
                        n1 = _rescue_into(x, L0, yq, L1, c1, n1, cap, ref, refoff, model, p, keys_w,
                                          keys_q, votes, Hp, Hc, Fp, Fc, tb, cig, rops, rlens)
                for t in range(min(m1, 3)):
                    x = c1[t]
                    if x.score < c1[0].score - p[UNPAIRED]:
                        break
                    if not _has_proper(x, L1, c0, n0, L0, model):
                        yq = q0 if x.rel == 1 else rcq0
                        n0 = _rescue_into(x, L1, yq, L0, c0, n0, cap, ref, refoff, model, p, keys_w,
                                          keys_q, votes, Hp, Hc, Fp, Fc, tb, cig, rops, rlens)
                n0 = _sort_dedup(c0, n0, ctmp)
                n1 = _sort_dedup(c1, n1, ctmp)
                ncand[r0] = n0
                ncand[r1] = n1
            # --- pairs
            npr = 0
            if model[IS_VALID] > 0:
                for a in range(n0):
                    for b in range(n1):
                        isz = proper_insert(c0[a], L0, c1[b], L1, model)
                        if isz >= 0:
                            ps[npr] = c0[a].score + c1[b].score + pair_bonus(isz, model, match)
                            pa[npr] = a
                            pb[npr] = b
                            npr += 1
            ch0 = -1
            ch1 = -1
            proper = False
            q_pe = 0
            if npr > 0:
                bi = 0
                for t in range(1, npr):
                    if ps[t] > ps[bi]:
                        bi = t
                ties = 0
                for t in range(npr):
                    if ps[t] >= ps[bi] - 1e-9:
                        ties += 1
                pick = np.int64(h % np.uint64(ties))
                for t in range(npr):
                    if ps[t] >= ps[bi] - 1e-9:
                        if pick == 0:
                            bi = t
                            break
                        pick -= 1
                best = ps[bi]
                s_un = c0[0].score + c1[0].score - p[UNPAIRED]
                if best >= s_un:
                    proper = True
                    ch0 = pa[bi]
                    ch1 = pb[bi]
                    pw = np.exp(-(best - s_un) * LN4)
                    for t in range(npr):
                        if t != bi:
                            pw += np.exp(-(best - ps[t]) * LN4)
                    qf = phred_wrong(pw)
                    qf = qf * (1.0 - 0.5 * (rep[r0] / L0 + rep[r1] / L1))
                    q_pe = int(qf + 0.499)
                    if q_pe > 60:
                        q_pe = 60
            if not proper:
                ch0 = _pick_best(c0, n0, h)
                ch1 = _pick_best(c1, n1, h >> np.uint64(17))
            # --- records
            for mate in range(2):
                r = r0 + mate
                ch = ch0 if mate == 0 else ch1
                cr = c0 if mate == 0 else c1
                n = n0 if mate == 0 else n1
                L = L0 if mate == 0 else L1
                a = aln[r]
                a.ncig = 0
                a.sub = -1
                a.mapq = 0
                a.score = 0
                a.rev = 0
                a.tid = -1
                a.pos = -1
                a.flag = bam.F_PAIRED | (bam.F_READ1 if mate == 0 else bam.F_READ2)
                if ch < 0 or cr[ch].score < p[MIN_SCORE]:
                    a.flag |= bam.F_UNMAP
                    continue
                x = cr[ch]
                sub, nsub = _sub_of(cr, n, ch)
                q_se = mapq_se(x, L, sub, nsub, rep[r], match, mism)
                mq = q_se
                if proper:
                    mq = q_se if q_se > q_pe else (q_pe if q_pe < q_se + 40 else q_se + 40)
                if mq > 60:
                    mq = 60
                co = r * bam.MAXCIG
                if x.gapped:
                    qq = (q0 if mate == 0 else q1) if x.rel == 0 else (rcq0 if mate == 0 else rcq1)
                    sc, rb, nc = align_cigar(qq, L, ref, refoff[x.tid], refoff[x.tid + 1], x.gdlo, x.gdhi,
                                             p, Hp, Hc, Fp, Fc, tb, cig, rops, rlens)
                    if nc > bam.MAXCIG:
                        a.flag |= bam.F_UNMAP
                        continue
                    for t in range(nc):
                        cigs[co + t] = cig[t]
                else:
                    nc = cigar_ungapped(x.qb, x.qe, L, cigs[co:co + 3])
                a.ncig = nc
                a.tid = x.tid
                a.pos = x.rb - refoff[x.tid]
                a.rev = x.rel
                a.score = x.score
                a.sub = sub
                a.mapq = mq
                if x.rel:
                    a.flag |= bam.F_REVERSE
                if proper:
                    a.flag |= bam.F_PROPER
            # --- mate fields
            for mate in range(2):
                r = r0 + mate
                o = r0 + 1 - mate
                a = aln[r]
                b = aln[o]
                um = (a.flag & bam.F_UNMAP) != 0
                omu = (b.flag & bam.F_UNMAP) != 0
                if omu:
                    a.flag |= bam.F_MUNMAP
                if um and not omu:
                    a.tid = b.tid        # an unmapped read sits at its mate's position
                    a.pos = b.pos
            for mate in range(2):
                r = r0 + mate
                o = r0 + 1 - mate
                a = aln[r]
                b = aln[o]
                a.mtid = b.tid
                a.mpos = b.pos
                if b.flag & bam.F_REVERSE:
                    a.flag |= bam.F_MREVERSE
                a.tlen = 0
                if (a.flag & bam.F_UNMAP) == 0 and (b.flag & bam.F_UNMAP) == 0 and a.tid == b.tid:
                    ea = a.pos + ref_span(cigs, r * bam.MAXCIG, a.ncig) - 1
                    eb = b.pos + ref_span(cigs, o * bam.MAXCIG, b.ncig) - 1
                    p0 = ea if a.rev else a.pos          # 5' ends, as bwa computes TLEN
                    p1 = eb if b.rev else b.pos
                    if p0 > p1:
                        a.tlen = -(p0 - p1 + 1)
                    elif p0 < p1:
                        a.tlen = p1 - p0 + 1
                    else:
                        a.tlen = 0


@jit
def region_of_reads(aln, first_region, starts):
    """Region index of every read (the region holding its position; a read without position:
    -1). first_region[t]..first_region[t+1] are contig t's regions, starts their start positions."""
    n = aln.shape[0]
    out = np.empty(n, np.int32)
    for r in range(n):
        t = aln[r].tid
        if t < 0:
            out[r] = -1
            continue
        a = first_region[t]
        b = first_region[t + 1]
        out[r] = a + np.searchsorted(starts[a:b], aln[r].pos, side="right") - 1
    return out


@jit
def group_records(data, sizes, regions, nreg):
    """Reorder encoded records by region (stable): returns (bytes, bounds) with region g's records
    in bytes[bounds[g]:bounds[g+1]]; the reads without position (-1) come last, as group nreg."""
    n = sizes.shape[0]
    offs = np.empty(n + 1, np.int64)
    offs[0] = 0
    for r in range(n):
        offs[r + 1] = offs[r] + sizes[r]
    bounds = np.zeros(nreg + 2, np.int64)
    for r in range(n):
        g = regions[r] if regions[r] >= 0 else nreg
        bounds[g + 1] += sizes[r]
    for g in range(nreg + 1):
        bounds[g + 1] += bounds[g]
    fill = bounds[:nreg + 1].copy()
    out = np.empty(offs[n], np.uint8)
    for r in range(n):
        g = regions[r] if regions[r] >= 0 else nreg
        out[fill[g]:fill[g] + sizes[r]] = data[offs[r]:offs[r + 1]]
        fill[g] += sizes[r]
    return out, bounds


class Aligner:
    """Aligns batches of read pairs against a loaded index."""

    def __init__(self, idx, p=None):
        self.idx = idx
        self.p = params() if p is None else p
        self.refoff = idx.offsets

    def align(self, batch):
        """ReadBatch -> (aln records, cigar buffer, insert-size model)."""
        idx, p = self.idx, self.p
        nreads = 2 * batch.n
        lens = np.diff(batch.roff)
        maxlen = int(lens.max()) if nreads else 1
        bmax = MAX_SPREAD + 2 * int(p[BAND]) + 2
        cap = int(p[MAX_CAND]) + EXTRA_CAND
        cand = np.zeros((nreads, cap), CAND)
        ncand = np.zeros(nreads, np.int32)
        nloci = np.zeros(nreads, np.int32)
        rep = np.zeros(nreads, np.int32)
        candidates_batch(batch.seq, batch.roff, idx.seq, self.refoff, idx.mzb, idx.mzk, idx.mzo, idx.mzp,
                         idx.bucket_bits, idx.k, idx.w, p, maxlen, bmax, cand, ncand, nloci, rep)
        model = insert_model(cand, ncand, lens)
        aln = np.zeros(nreads, bam.ALN)
        cigs = np.zeros(nreads * bam.MAXCIG, np.uint32)
        pairs_batch(batch.seq, batch.roff, batch.names, batch.noff, idx.seq, self.refoff, p, model, bmax,
                    maxlen, cand, ncand, rep, aln, cigs)
        return aln, cigs, model

    def align_encode(self, batch, rg_arr, qcounts=None):
        """align(), then the batch's BAM records: (aln, model, record bytes, record sizes); adds the
        batch's base quality counts to qcounts when given."""
        aln, cigs, model = self.align(batch)
        sizes = np.empty(len(aln), np.int64)
        data = bam.encode_batch(aln, batch.names, batch.noff, batch.seq, batch.qual, batch.roff, cigs,
                                self.idx.seq, self.refoff, rg_arr, np.ones(len(aln), np.bool_), sizes)
        if qcounts is not None:
            count_qualities(qcounts, aln, batch, data, sizes, self.idx, self.refoff)
        return aln, model, data, sizes


class Stats:
    """Counts for the mapping summary (and the JSON the master reads)."""

    FIELDS = ("reads", "mapped", "proper", "mapq20", "pairs_both_mapped")

    def __init__(self):
        self.c = dict.fromkeys(self.FIELDS, 0)
        self.isize = []

    def add(self, aln, model):
        f = aln["flag"]
        mapped = (f & bam.F_UNMAP) == 0
        self.c["reads"] += len(aln)
        self.c["mapped"] += int(mapped.sum())
        self.c["proper"] += int(((f & bam.F_PROPER) != 0).sum())
        self.c["mapq20"] += int((mapped & (aln["mapq"] >= 20)).sum())
        self.c["pairs_both_mapped"] += int((mapped[0::2] & mapped[1::2]).sum())
        if model[0] > 0:
            self.isize.append((float(model[1]), float(model[2])))

    def merge(self, other):
        for k in self.FIELDS:
            self.c[k] += other.c[k]
        self.isize += other.isize

    def summary(self):
        n = max(self.c["reads"], 1)
        d = dict(self.c)
        d.update(frac_mapped=round(self.c["mapped"] / n, 6), frac_proper=round(self.c["proper"] / n, 6),
                 frac_mapq20=round(self.c["mapq20"] / n, 6))
        if self.isize:
            d["insert_mean"] = round(float(np.mean([m for m, _ in self.isize])), 1)
            d["insert_std"] = round(float(np.mean([s for _, s in self.isize])), 1)
        return d


def count_qualities(counts, aln, batch, data, sizes, idx, refoff):
    """Add the batch's base quality counts (kernels.qualcal) over the records just encoded."""
    starts = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    sel = np.flatnonzero(qualcal.counted(aln["flag"], aln["mapq"], read_name_hashes(batch.names, batch.noff)))
    qualcal.count_errors(data, starts, sel, aln["pos"], aln["flag"], idx.seq, refoff, aln["tid"], *counts)


def _mpi():
    """(comm, rank, size): mpi4py's world when started by mpiexec/srun, else a single rank."""
    launched = any(v in os.environ for v in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_SIZE"))
    if not launched:
        return None, 0, 1
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    return comm, comm.Get_rank(), comm.Get_size()


def parse_rg(rg):
    """-R '@RG\\tID:x\\tSM:y' -> (header line, ID)."""
    if not rg:
        return None, None
    line = rg.replace("\\t", "\t")
    fields = line.split("\t")
    if fields[0] != "@RG":
        raise InputError(f"-R {rg!r}: a read group line must start with '@RG' (e.g. '@RG\\tID:lane1\\tSM:sample')")
    ids = [f[3:] for f in fields[1:] if f.startswith("ID:")]
    if len(ids) != 1 or not ids[0]:
        raise InputError(f"-R {rg!r}: the read group needs exactly one non-empty ID:... field")
    return line, ids[0]


def run(prefix, r1, r2, out, threads=1, rg=None, reference=None, batch_pairs=BATCH_PAIRS, level=1,
        argv=None, progress=None, regions=None, parts_prefix=None, qual_counts=None):
    """Align R1/R2 with the index at prefix into out (BAM), or with regions (a BED tiling the
    genome) into one part file per region under parts_prefix. Returns the summary dict (rank 0)."""
    if regions:
        return run_parts(prefix, r1, r2, regions, parts_prefix, threads, rg, reference, batch_pairs, level,
                         argv, progress, qual_counts)
    comm, rank, size = _mpi()
    t0 = time.perf_counter()
    idx, header, rg_arr = _setup(prefix, rg, reference, threads, argv)
    if os.path.isdir(out):
        raise InputError(f"-o {out}: is a directory; give the BAM file's path")
    outdir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(outdir):
        raise InputError(f"-o {out}: directory {outdir} does not exist")
    aligner = Aligner(idx)
    stats = Stats()
    counts = list(qualcal.new_counts())
    tmp = f"{out}.tmp{os.getpid()}"
    # the batches' files, in a directory of this run's own (a killed run's leftovers are never merged)
    parts = comm.bcast(f"{out}.parts.tmp{os.getpid()}" if rank == 0 else None, root=0) if size > 1 else None
    writer = None
    try:
        if size > 1:
            if rank == 0:
                os.makedirs(parts, exist_ok=True)
            comm.Barrier()
        writer = bam.BamWriter(level)
        if size == 1:
            writer.open(tmp, header)
        for b, batch in mpiwork.batches(lambda: PairedReader(r1, r2, batch_pairs, guided=True), comm, rank, size):
            aln, model, data, sizes = aligner.align_encode(batch, rg_arr, counts if qual_counts else None)
            if size > 1:
                writer.open(os.path.join(parts, f"part-{b:07d}.bgzf"), b"")   # records only
                writer.write(data)
                writer.close_file()
            else:
                writer.write(data)
            stats.add(aln, model)
            if progress:
                progress(stats)
        writer.close()
        writer = None
        if size == 1:
            os.replace(tmp, out)
            if qual_counts:
                qualcal.write_counts(qual_counts, *counts)
        else:
            allstats = comm.gather((stats, counts), root=0)
            if rank == 0:
                for s, c in allstats[1:]:
                    stats.merge(s)
                    counts[0] += c[0]
                    counts[1] += c[1]
                if qual_counts:
                    qualcal.write_counts(qual_counts, *counts)
                files = sorted(os.listdir(parts))
                bam.concat_records(tmp, header, [os.path.join(parts, f) for f in files], level)
                os.replace(tmp, out)
                shutil.rmtree(parts, ignore_errors=True)
            comm.Barrier()
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if os.path.exists(tmp):
            os.unlink(tmp)
        if parts and (rank == 0 or not isinstance(e, InputError)):
            shutil.rmtree(parts, ignore_errors=True)
        if size > 1 and not isinstance(e, InputError):
            # bad input stops every rank at the same record; anything else happened on this rank
            # only, and the others would wait for it forever
            import traceback
            traceback.print_exc()
            print(f"kernels.align: rank {rank} failed; aborting all {size} ranks", file=sys.stderr)
            comm.Abort(1)
        raise
    res = stats.summary()
    res["seconds"] = round(time.perf_counter() - t0, 3)
    res["ranks"] = size
    res["threads"] = threads
    res["bam"] = os.path.abspath(out)
    return res if rank == 0 else None


def _setup(prefix, rg, reference, threads, argv):
    """Index, header bytes, read-group array: what both kinds of output need."""
    set_threads(threads)
    rg_line, rg_id = parse_rg(rg)
    idx = gindex.load(prefix)
    if reference:
        gindex.check_reference(idx, reference)
    cl = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv))
    pg = f"@PG\tID:genefarm-align\tPN:genefarm-align\tVN:{__version__}\tCL:{cl}"
    text = bam.header_text(idx.names, idx.lengths, [c["m5"] for c in idx.meta["contigs"]], rg_line, pg)
    header = bam.header_bytes(text, idx.names, idx.lengths)
    rg_arr = np.frombuffer(rg_id.encode(), np.uint8).copy() if rg_id else np.empty(0, np.uint8)
    return idx, header, rg_arr


def run_parts(prefix, r1, r2, regions, parts_prefix, threads=1, rg=None, reference=None,
              batch_pairs=BATCH_PAIRS, level=1, argv=None, progress=None, qual_counts=None):
    """--regions/--parts: every read goes into the part file of the region holding its position
    (a read placed at its unmapped mate's position too); pairs with no position go to the
    unmapped part. Every part exists at the end, possibly empty. With K ranks a part holds the
    same records as with one rank, grouped by rank."""
    comm, rank, size = _mpi()
    t0 = time.perf_counter()
    idx, header, rg_arr = _setup(prefix, rg, reference, threads, argv)
    first, starts, reglist = read_regions(regions, idx.names, idx.lengths)
    nreg = len(reglist)
    pdir = os.path.dirname(os.path.abspath(parts_prefix))
    if not os.path.isdir(pdir):
        raise InputError(f"--parts {parts_prefix}: directory {pdir} does not exist")
    finals = part_paths(parts_prefix, nreg)
    mine = [f"{p}.rank{rank}.tmp" for p in finals]
    counts = np.zeros(nreg + 1, np.int64)
    qcounts = list(qualcal.new_counts())
    aligner = Aligner(idx)
    stats = Stats()
    writer = bam.BamWriter(level)
    try:
        for p in mine:
            writer.open(p, header)
        for b, batch in mpiwork.batches(lambda: PairedReader(r1, r2, batch_pairs, guided=True), comm, rank, size):
            aln, model, data, sizes = aligner.align_encode(batch, rg_arr, qcounts if qual_counts else None)
            regs = region_of_reads(aln, first, starts)
            grouped, bounds = group_records(data, sizes, regs, nreg)
            counts += np.bincount(np.where(regs < 0, nreg, regs), minlength=nreg + 1)
            for g in np.flatnonzero(np.diff(bounds)):
                writer.select(mine[g])
                writer.write(grouped[bounds[g]:bounds[g + 1]])
            stats.add(aln, model)
            if progress:
                progress(stats)
        writer.close()
        writer = None
        if size > 1:
            allstats = comm.gather((stats, counts, qcounts), root=0)
            if rank == 0:
                import pysam
                for s_, c_, q_ in allstats[1:]:
                    stats.merge(s_)
                    counts += c_
                    qcounts[0] += q_[0]
                    qcounts[1] += q_[1]
                if qual_counts:
                    qualcal.write_counts(qual_counts, *qcounts)
                # the ranks' files of a region, concatenated in rank order (samtools cat)
                for final in finals:
                    files = [f"{final}.rank{k}.tmp" for k in range(size)]
                    tmp = f"{final}.tmp{os.getpid()}"
                    pysam.cat("-o", tmp, *files)
                    os.replace(tmp, final)
                    for f in files:
                        os.unlink(f)
            comm.Barrier()
        else:
            for p, final in zip(mine, finals):
                os.replace(p, final)
            if qual_counts:
                qualcal.write_counts(qual_counts, *qcounts)
    except BaseException as e:
        if writer is not None:
            writer.abort()
        for p in mine:
            if os.path.exists(p):
                os.unlink(p)
        if size > 1 and not isinstance(e, InputError):
            import traceback
            traceback.print_exc()
            print(f"kernels.align: rank {rank} failed; aborting all {size} ranks", file=sys.stderr)
            comm.Abort(1)
        raise
    if rank != 0:
        return None
    res = stats.summary()
    res.update(seconds=round(time.perf_counter() - t0, 3), ranks=size, threads=threads,
               parts=[{"region": f"{c}:{s_ + 1}-{e}", "bam": os.path.abspath(p), "reads": int(n)}
                      for (c, s_, e), p, n in zip(reglist, finals, counts)],
               unmapped={"bam": os.path.abspath(finals[-1]), "reads": int(counts[nreg])})
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.align",
                                 description="Align paired-end short reads to a genefarm index; writes BAM.")
    ap.add_argument("prefix", help="index prefix (from python -m kernels.index)")
    ap.add_argument("r1", help="mate 1 FASTQ (plain or gzip)")
    ap.add_argument("r2", help="mate 2 FASTQ (plain or gzip)")
    out = ap.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", help="output BAM")
    out.add_argument("--parts", metavar="PREFIX",
                     help="with --regions: write PREFIX.rNNNN.bam per region and PREFIX.unmapped.bam")
    ap.add_argument("--regions", metavar="BED", help="regions tiling the genome (chrom, start, end; 0-based)")
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads per rank (default 1)")
    ap.add_argument("-R", "--read-group", help=r"read group header line, e.g. '@RG\tID:lane1\tSM:sample'")
    ap.add_argument("--reference", help="check that the index was built from this FASTA")
    ap.add_argument("--batch", type=int, default=BATCH_PAIRS, help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, default=1, choices=range(0, 10), metavar="0-9",
                    help="BGZF compression level (default 1: fast; 6 is samtools' default)")
    ap.add_argument("--qual-counts", metavar="FILE",
                    help="write the base quality calibration counts here (for kernels.call --qual-counts)")
    ap.add_argument("--json", action="store_true", help="print the mapping summary as JSON on stdout")
    ap.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    a = ap.parse_args(argv)
    if not a.quiet:
        note_compile()
    if a.threads < 1:
        raise InputError(f"-t {a.threads}: need at least one thread")
    if bool(a.parts) != bool(a.regions):
        raise InputError("--parts and --regions go together (one part file per region)")
    res = run(a.prefix, a.r1, a.r2, a.output, a.threads, a.read_group, a.reference, a.batch, a.level,
              argv=["python -m kernels.align"] + (argv if argv is not None else sys.argv[1:]),
              regions=a.regions, parts_prefix=a.parts, qual_counts=a.qual_counts)
    if res is None:
        return 0
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    if not a.quiet:
        print(f"aligned {res['reads']:,} reads in {res['seconds']:.1f} s: mapped {100 * res['frac_mapped']:.2f}%, "
              f"properly paired {100 * res['frac_proper']:.2f}%, MAPQ>=20 {100 * res['frac_mapq20']:.2f}%"
              + (f", insert {res['insert_mean']:.0f} +- {res['insert_std']:.0f}" if "insert_mean" in res else "")
              + f" -> {a.output or a.parts + '.*.bam'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.align")
