"""Pileup: what the reads of a window say at every reference position, and the candidate alleles.

One pass over the reads (their raw BAM bytes; the reads already filtered: no duplicates, no
unmapped/secondary/supplementary/QC-failed, MAPQ high enough) fills:
    cnt[p, b]   reads showing base b (0-3 = ACGT) at window position p with base quality >= min_bq
    depth[p]    reads with a base of quality >= min_bq at p, plus reads deleting p
and lists every indel of every CIGAR as an event (and the indel explaining a long soft clip: the
clipped bases match the reference once the first ones are taken as inserted, or once some
reference bases are skipped as deleted), left-normalised against the reference (a gap in
a repeat moved to its leftmost equivalent place, at most MAX_SHIFT bases away), so that the same
indel written at different places by different reads is one event:
    ev_anchor   reference position of the base before the indel (VCF's anchor base)
    ev_len      +length of an insertion, -length of a deletion
    ev_soff     an insertion's normalised bases are ev_seq[ev_soff[i]:ev_soff[i] + ev_len[i]]
    ev_hash     a hash of those bases (0 for deletions), to group identical insertions
Candidate alleles are then the bases and indels seen often enough (`candidates`).
"""
import numpy as np

from kernels._numba import jit
from kernels.bamrec import base_at, i32 as _i32, record_layout

# BAM 4-bit base -> code (A C G T = 0 1 2 3, anything else 4)
MAX_SHIFT = 500          # left-normalisation moves an indel at most this far (bounds a site's reads)
MIN_CLIP = 8             # soft clips at least this long are searched for the indel they may hide...
MIN_CLIP_MATCH = 8       # ...which must leave at least this many clipped bases matching the reference
MAX_CLIP_INDEL = 50      # longest indel looked for in a clip


@jit
def _hash_seq(buf, a, n):
    h = np.uint64(14695981039346656037)
    for t in range(n):
        h = (h ^ np.uint64(buf[a + t] + 1)) * np.uint64(1099511628211)
    return h


@jit
def _match_count(raw, s0, qa, ref, ra, n):
    """Mismatches between read bases qa.. and reference ra.. over n bases (N counts as a mismatch)."""
    mm = 0
    for t in range(n):
        c = ref[ra + t]
        if c > 3 or base_at(raw, s0, qa + t) != c:
            mm += 1
    return mm


@jit
def _clip_event(raw, s0, ref, rp, qi, clip, right, out):
    """The indel that explains a soft clip of `clip` read bases at reference position rp (right: the
    clip follows the aligned bases, which end before rp; left: it precedes them, which start at
    rp; qi: the clip's first read base). The rest of the clipped bases (>= MIN_CLIP_MATCH of them,
    at most one mismatch) must match the reference beyond the indel. out gets (anchor, length,
    inserted bases from read offset); returns False when nothing explains the clip."""
    nref = ref.shape[0]
    for d in range(1, MAX_CLIP_INDEL + 1):
        for kind in range(2):                 # 0: deletion of d bases, 1: insertion of d bases
            if kind == 1 and clip - d < MIN_CLIP_MATCH:
                continue
            m = clip - (d if kind == 1 else 0)
            if m > 20:
                m = 20
            if right:
                qa = qi + (d if kind == 1 else 0)
                ra = rp + (d if kind == 0 else 0)
                if ra + m > nref:
                    continue
                if _match_count(raw, s0, qa, ref, ra, m) <= 1:
                    out[0] = rp - 1
                    out[1] = -d if kind == 0 else d
                    out[2] = qi
                    return True
            else:
                qe = qi + clip - (d if kind == 1 else 0)     # one past the last read base that must match
                re = rp - (d if kind == 0 else 0)
                if re - m < 0:
                    continue
                if _match_count(raw, s0, qe - m, ref, re - m, m) <= 1:
                    out[0] = rp - d - 1 if kind == 0 else rp - 1
                    out[1] = -d if kind == 0 else d
                    out[2] = qi + clip - d
                    return True
    return False


@jit
def _add_event(ref, raw, s0, anchor, ln, qoff, ev_anchor, ev_len, ev_soff, ev_hash, ev_seq, ne, ns):
    """Append one indel event, left-normalised. Returns (ne, ns) or (-1, ns) when full."""
    if ne >= ev_anchor.shape[0]:
        return -1, ns
    rp = anchor + 1
    if ln < 0:
        d = -ln
        r0 = rp
        while r0 - 1 > 0 and rp - r0 < MAX_SHIFT and ref[r0 - 1] < 4 and ref[r0 - 1] == ref[r0 + d - 1]:
            r0 -= 1
        ev_anchor[ne] = r0 - 1
        ev_len[ne] = ln
        ev_soff[ne] = 0
        ev_hash[ne] = np.uint64(0)
        return ne + 1, ns
    if ns + ln > ev_seq.shape[0]:
        return -1, ns
    for t in range(ln):
        ev_seq[ns + t] = base_at(raw, s0, qoff + t)
    r0 = rp
    while r0 - 1 > 0 and rp - r0 < MAX_SHIFT and ref[r0 - 1] < 4 and ref[r0 - 1] == ev_seq[ns + ln - 1]:
        last = ev_seq[ns + ln - 1]
        for t in range(ln - 1, 0, -1):
            ev_seq[ns + t] = ev_seq[ns + t - 1]
        ev_seq[ns] = last
        r0 -= 1
    ev_anchor[ne] = r0 - 1
    ev_len[ne] = ln
    ev_soff[ne] = ns
    ev_hash[ne] = _hash_seq(ev_seq, ns, ln)
    return ne + 1, ns + ln


@jit
def pileup(raw, roff, use, pos, ref, ws, we, min_bq, cnt, depth,
           ev_anchor, ev_len, ev_soff, ev_hash, ev_seq):
    """Fill cnt/depth for window [ws, we) and the indel events; returns the number of events (or
    -1 when the event arrays are full). ref is the whole contig's codes (window positions index it
    directly), `use` lists the reads to pile up."""
    ne = 0
    ns = 0
    clip_ev = np.empty(3, np.int64)
    for u in range(use.shape[0]):
        r = use[u]
        p = roff[r]
        c0, ncig, s0, q0, lseq = record_layout(raw, p)
        rp = pos[r]
        qi = 0
        for k in range(ncig):
            word = _i32(raw, c0 + 4 * k)
            op = word & 15
            ln = word >> 4
            if op == 0 or op == 7 or op == 8:
                for t in range(ln):
                    x = rp + t
                    if x >= ws and x < we:
                        q = raw[q0 + qi + t]
                        if q >= min_bq and q != 255:
                            b = base_at(raw, s0, qi + t)
                            depth[x - ws] += 1
                            if b < 4:
                                cnt[x - ws, b] += 1
                rp += ln
                qi += ln
            elif op == 2 or op == 1:
                if op == 2:
                    for t in range(ln):
                        x = rp + t
                        if x >= ws and x < we:
                            depth[x - ws] += 1
                if rp - 1 >= ws and rp - 1 < we and ln <= 1000:
                    ne, ns = _add_event(ref, raw, s0, rp - 1, -ln if op == 2 else ln, qi,
                                        ev_anchor, ev_len, ev_soff, ev_hash, ev_seq, ne, ns)
                    if ne < 0:
                        return -1
                if op == 2:
                    rp += ln
                else:
                    qi += ln
            elif op == 4:
                # a clip of MIN_CLIP bases or more may hide an indel near the read's end
                if ln >= MIN_CLIP and rp - 1 >= ws and rp - 1 < we:
                    if _clip_event(raw, s0, ref, rp, qi, ln, k > 0, clip_ev):
                        ne, ns = _add_event(ref, raw, s0, clip_ev[0], clip_ev[1], clip_ev[2],
                                            ev_anchor, ev_len, ev_soff, ev_hash, ev_seq, ne, ns)
                        if ne < 0:
                            return -1
                qi += ln
            elif op == 3:
                rp += ln
    return ne


# ---------------------------------------------------------------- slow twin (plain Python)

def _apply(ref, lo, hi, at, dele, ins):
    """ref[lo:hi] with ref[at:at+dele] deleted and `ins` inserted before `at`, as a list."""
    return [int(x) for x in ref[lo:at]] + list(ins) + [int(x) for x in ref[at + dele:hi]]


def pileup_slow(reads, ref, ws, we, min_bq):
    """reads: [(pos, [(op, len)], codes, quals)] -> (cnt dict {(p, b): n}, depth dict, events list of
    (anchor, len, inserted codes tuple)), the definitions written plainly."""
    cnt, depth, events = {}, {}, []
    for pos, cigar, codes, quals in reads:
        rp, qi = pos, 0
        seen_aligned = False
        for op, ln in cigar:
            if op in (0, 7, 8):
                for t in range(ln):
                    x = rp + t
                    if ws <= x < we and quals[qi + t] >= min_bq and quals[qi + t] != 255:
                        depth[x] = depth.get(x, 0) + 1
                        if codes[qi + t] < 4:
                            cnt[(x, codes[qi + t])] = cnt.get((x, codes[qi + t]), 0) + 1
                rp += ln
                qi += ln
            elif op in (1, 2):
                if op == 2:
                    for x in range(rp, rp + ln):
                        if ws <= x < we:
                            depth[x] = depth.get(x, 0) + 1
                if ws <= rp - 1 < we and ln <= 1000:
                    # the leftmost place giving the same haplotype (the sequence, not a shortcut)
                    lo, hi = max(0, rp - MAX_SHIFT - 1), min(len(ref), rp + 2 * ln + 10)
                    ins = [] if op == 2 else [int(x) for x in codes[qi:qi + ln]]
                    hap = _apply(ref, lo, hi, rp, ln if op == 2 else 0, ins)
                    r0, s = rp, ins
                    while r0 - 1 > max(lo, 0) and rp - r0 < MAX_SHIFT and ref[r0 - 1] < 4:
                        cand = r0 - 1
                        s2 = [] if op == 2 else list(hap[cand - lo:cand - lo + ln])
                        if _apply(ref, lo, hi, cand, ln if op == 2 else 0, s2) != hap:
                            break
                        r0, s = cand, s2
                    events.append((r0 - 1, -ln if op == 2 else ln, tuple(s)))
                if op == 2:
                    rp += ln
                else:
                    qi += ln
            elif op == 4:
                if ln >= MIN_CLIP and ws <= rp - 1 < we:
                    ev = _clip_event_slow(codes, ref, rp, qi, ln, right=seen_aligned)
                    if ev:
                        events.append(_normalise_slow(ref, *ev))
                qi += ln
            elif op == 3:
                rp += ln
            seen_aligned = seen_aligned or op in (0, 7, 8, 1, 2, 3)
    return cnt, depth, events


def _normalise_slow(ref, anchor, ln, ins):
    """The leftmost placement (within MAX_SHIFT) giving the same haplotype."""
    rp = anchor + 1
    lo, hi = max(0, rp - MAX_SHIFT - 1), min(len(ref), rp + 2 * abs(ln) + 10)
    dele = -ln if ln < 0 else 0
    hap = _apply(ref, lo, hi, rp, dele, ins)
    r0, s = rp, list(ins)
    while r0 - 1 > max(lo, 0) and rp - r0 < MAX_SHIFT and ref[r0 - 1] < 4:
        cand = r0 - 1
        s2 = [] if ln < 0 else list(hap[cand - lo:cand - lo + ln])
        if _apply(ref, lo, hi, cand, dele, s2) != hap:
            break
        r0, s = cand, s2
    return r0 - 1, ln, tuple(s)


def _clip_event_slow(codes, ref, rp, qi, clip, right):
    """The first d (deletion before insertion) whose indel makes the clipped bases match."""
    def mism(qa, ra, n):
        return sum(1 for t in range(n) if ref[ra + t] > 3 or codes[qa + t] != ref[ra + t])
    for d in range(1, MAX_CLIP_INDEL + 1):
        for kind in ("del", "ins"):
            if kind == "ins" and clip - d < MIN_CLIP_MATCH:
                continue
            m = min(20, clip - (d if kind == "ins" else 0))
            if right:
                qa, ra = qi + (d if kind == "ins" else 0), rp + (d if kind == "del" else 0)
                if ra + m <= len(ref) and mism(qa, ra, m) <= 1:
                    return (rp - 1, -d, []) if kind == "del" else (rp - 1, d, [int(x) for x in codes[qi:qi + d]])
            else:
                qe, re = qi + clip - (d if kind == "ins" else 0), rp - (d if kind == "del" else 0)
                if re - m >= 0 and mism(qe - m, re - m, m) <= 1:
                    if kind == "del":
                        return rp - d - 1, -d, []
                    return rp - 1, d, [int(x) for x in codes[qi + clip - d:qi + clip]]
    return None
