"""Placement: for every pair of a batch (threads over pairs), rescue mates, choose the placements,
give them a mapping quality, a CIGAR, flags and mate fields (the third phase of a batch, after
the candidates and the batch's insert-size model).

* Rescue: a mate with no candidate near a good placement of its read is searched where the
  insert-size model puts it (pair.rescue).
* The best proper pair wins over the best single placements unless these score more than the
  unpaired penalty better; ties are broken by a hash of the read name, so the choice does not
  depend on the batch, thread or rank.
* MAPQ: the pair's from the pair scores of the alternatives, each read's from its own
  (pair.mapq_se), the pair's raised by at most 40 over the read's.
Output: aln (types.ALN, one per read) and the CIGARs in cigs at read * stride.
"""
import numpy as np

from kernels._numba import jit, pjit, prange
from kernels.bam import ref_span
from kernels.candidates import NCHUNKS, rc_into, sort_dedup
from kernels.extend import cigar_ungapped
from kernels.pair import IS_VALID, align_cigar, mapq_se, pair_bonus, phred_wrong, proper_insert, rescue
from kernels.scoring import MATCH, MIN_SCORE, MISMATCH, RESCUE_MIN, UNPAIRED
from kernels.types import (CAND, F_MREVERSE, F_MUNMAP, F_PAIRED, F_PROPER, F_READ1, F_READ2, F_REVERSE,
                           F_UNMAP)

@jit
def _name_hash(names, a, b):
    h = np.uint64(14695981039346656037)
    for t in range(a, b):
        h = (h ^ np.uint64(names[t])) * np.uint64(1099511628211)
    return h


@jit
def read_name_hashes(names, noff, paired):
    """FNV-1a hash of every read's name (both mates of a pair share it), as kernels.bamread has it."""
    n = noff.shape[0] - 1
    per = 2 if paired else 1
    out = np.empty(per * n, np.uint64)
    for i in range(n):
        h = _name_hash(names, noff[i], noff[i + 1])
        for m in range(per):
            out[per * i + m] = h
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


@jit
def prefer_primary(cr, n, alt, tmp, min_score):
    """bwa mem's ALT rules: when a read has a placement on the primary assembly (alt[tid] == 0)
    scoring at least min_score, only its primary-assembly candidates compete: one of them is
    reported, and its mapping quality is computed among them alone (an ALT copy of the same
    sequence does not make it ambiguous). A read placed on ALT contigs only keeps all its
    candidates. Moves the primary-assembly candidates before the others (keeping their order)
    and returns how many candidates compete. tmp: a one-record CAND array."""
    m = 0
    best = -1
    for i in range(n):
        if alt[cr[i].tid] == 0:
            if cr[i].score > best:
                best = cr[i].score
            if i != m:
                tmp[0] = cr[i]
                for j in range(i, m, -1):
                    cr[j] = cr[j - 1]
                cr[m] = tmp[0]
            m += 1
    return m if (m > 0 and best >= min_score) else n


def prefer_primary_slow(cands, alt, min_score):
    """The same on a list of (tid, score, ...) tuples: (reordered list, count competing)."""
    pri = [c for c in cands if alt[c[0]] == 0]
    rest = [c for c in cands if alt[c[0]] != 0]
    ok = pri and max(c[1] for c in pri) >= min_score
    return pri + rest, (len(pri) if ok else len(cands))


@jit
def _record_single(a, x, L, q, rcq, sub, nsub, rep, ref, refoff, p, Hp, Hc, Fp, Fc, tb, cig, rops, rlens,
                   cigs, co):
    """Fill a single-end read's record a from its chosen candidate x."""
    a.mapq = min(60, mapq_se(x, L, sub, nsub, rep, p[MATCH], p[MISMATCH]))
    if x.gapped:
        qq = q if x.rel == 0 else rcq
        sc, rb, nc = align_cigar(qq, L, ref, refoff[x.tid], refoff[x.tid + 1], x.gdlo, x.gdhi,
                                 p, Hp, Hc, Fp, Fc, tb, cig, rops, rlens)
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
    if x.rel:
        a.flag |= F_REVERSE


@pjit
def singles_batch(seq, roff, names, noff, ref, refoff, alt, p, bmax, maxlen, cand, ncand, rep, aln, cigs, cstride):
    """Phase 3 for single-end reads: the best placement of every read (ties broken by the name's
    hash), its MAPQ, CIGAR and flags; no mate fields."""
    nreads = roff.shape[0] - 1
    chunk = (nreads + NCHUNKS - 1) // NCHUNKS
    for c in prange(NCHUNKS):
        rcq = np.empty(maxlen + 1, np.uint8)
        Hp = np.empty(bmax, np.int32)
        Hc = np.empty(bmax, np.int32)
        Fp = np.empty(bmax, np.int32)
        Fc = np.empty(bmax, np.int32)
        tb = np.empty((maxlen + 1) * bmax, np.uint8)
        cig = np.empty(2 * maxlen + 8, np.uint32)
        rops = np.empty(2 * maxlen + 8, np.int64)
        rlens = np.empty(2 * maxlen + 8, np.int64)
        ctmp = np.empty(1, CAND)
        for r in range(c * chunk, min(nreads, (c + 1) * chunk)):
            L = roff[r + 1] - roff[r]
            q = seq[roff[r]:roff[r + 1]]
            rc_into(q, L, rcq)
            cr = cand[r]
            n = prefer_primary(cr, ncand[r], alt, ctmp, p[MIN_SCORE])
            a = aln[r]
            a.ncig = 0
            a.sub = -1
            a.mapq = 0
            a.score = 0
            a.rev = 0
            a.tid = -1
            a.pos = -1
            a.mtid = -1
            a.mpos = -1
            a.tlen = 0
            a.flag = 0
            ch = _pick_best(cr, n, _name_hash(names, noff[r], noff[r + 1]))
            if ch < 0 or cr[ch].score < p[MIN_SCORE]:
                a.flag = F_UNMAP
                continue
            sub, nsub = _sub_of(cr, n, ch)
            _record_single(a, cr[ch], L, q, rcq, sub, nsub, rep[r], ref, refoff, p, Hp, Hc, Fp, Fc, tb, cig, rops,
                           rlens, cigs, r * cstride)


@pjit
def pairs_batch(seq, roff, names, noff, ref, refoff, alt, p, model, bmax, maxlen, cand, ncand, rep,
                aln, cigs, cstride):
    """Phase 3: for every pair, rescue, choose the placements, and fill aln/cigs. alt[tid] is 1
    for ALT (and HLA) contigs: see prefer_primary."""
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
            rc_into(q0, L0, rcq0)
            rc_into(q1, L1, rcq1)
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
                n0 = sort_dedup(c0, n0, ctmp)
                n1 = sort_dedup(c1, n1, ctmp)
                ncand[r0] = n0
                ncand[r1] = n1
            n0 = prefer_primary(c0, n0, alt, ctmp, p[MIN_SCORE])
            n1 = prefer_primary(c1, n1, alt, ctmp, p[MIN_SCORE])
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
                a.flag = F_PAIRED | (F_READ1 if mate == 0 else F_READ2)
                if ch < 0 or cr[ch].score < p[MIN_SCORE]:
                    a.flag |= F_UNMAP
                    continue
                x = cr[ch]
                sub, nsub = _sub_of(cr, n, ch)
                q_se = mapq_se(x, L, sub, nsub, rep[r], match, mism)
                mq = q_se
                if proper:
                    mq = q_se if q_se > q_pe else (q_pe if q_pe < q_se + 40 else q_se + 40)
                if mq > 60:
                    mq = 60
                co = r * cstride
                if x.gapped:
                    qq = (q0 if mate == 0 else q1) if x.rel == 0 else (rcq0 if mate == 0 else rcq1)
                    sc, rb, nc = align_cigar(qq, L, ref, refoff[x.tid], refoff[x.tid + 1], x.gdlo, x.gdhi,
                                             p, Hp, Hc, Fp, Fc, tb, cig, rops, rlens)
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
                    a.flag |= F_REVERSE
                if proper:
                    a.flag |= F_PROPER
            # --- mate fields
            for mate in range(2):
                r = r0 + mate
                o = r0 + 1 - mate
                a = aln[r]
                b = aln[o]
                um = (a.flag & F_UNMAP) != 0
                omu = (b.flag & F_UNMAP) != 0
                if omu:
                    a.flag |= F_MUNMAP
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
                if b.flag & F_REVERSE:
                    a.flag |= F_MREVERSE
                a.tlen = 0
                if (a.flag & F_UNMAP) == 0 and (b.flag & F_UNMAP) == 0 and a.tid == b.tid:
                    ea = a.pos + ref_span(cigs, r * cstride, a.ncig) - 1
                    eb = b.pos + ref_span(cigs, o * cstride, b.ncig) - 1
                    p0 = ea if a.rev else a.pos          # 5' ends, as bwa computes TLEN
                    p1 = eb if b.rev else b.pos
                    if p0 > p1:
                        a.tlen = -(p0 - p1 + 1)
                    elif p0 < p1:
                        a.tlen = p1 - p0 + 1
                    else:
                        a.tlen = 0


