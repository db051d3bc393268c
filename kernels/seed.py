"""Seeding: a read's minimizers looked up in the index, as hits on (strand, diagonal).

A hit says "the read's k-mer at q equals the reference k-mer at r". With `rel` the relative strand
(0: the read as given matches the forward reference, 1: its reverse complement does) and `qo` the
k-mer's position in the read so oriented, the hit lies on diagonal d = r - qo: the reference
position where the oriented read would start. A hit is packed in one uint64 so that sorting the
hits sorts them by (rel, diagonal, qo):
    bit 63: rel | bits 16-62: d + DIAG_OFFSET | bits 0-15: qo
Minimizers found more than MAX_OCC times are not used (repeats) but counted: the fraction of the
read they cover lowers the mapping quality.
"""
import numpy as np

from kernels._numba import jit
from kernels.sketch import sketch_into

DIAG_OFFSET = 1 << 20
QO_BITS = 16
QO_MASK = (1 << QO_BITS) - 1
MAX_READ_LEN = 4096


@jit
def table_key(h, hbits):
    """The index's table order of a minimizer hash (hbits bits): its top 8 bits moved to the bottom.
    Minimizers are the smallest hashes of their windows, so their top bits are far from uniform;
    the bits below are, and they make the buckets and the index's partitions even."""
    top = np.uint64(hbits - 8)
    return ((h & ((np.uint64(1) << top) - np.uint64(1))) << np.uint64(8)) | (h >> top)


@jit
def lookup(h, mzb, mzk, mzo, bits, hbits):
    """Occurrences of minimizer hash h (hbits bits): the slice [lo, hi) of the index's mzp array.
    Its bucket is the top `bits` bits of its table key, its key in the bucket the bits below."""
    g = table_key(h, hbits)
    low = np.uint64(hbits - bits)
    b = np.int64(g >> low)
    key = g & ((np.uint64(1) << low) - np.uint64(1))
    for t in range(mzb[b], mzb[b + 1]):
        if mzk[t] == key:
            return np.int64(mzo[t]), np.int64(mzo[t + 1])
    return np.int64(0), np.int64(0)


def table_key_slow(h, hbits):
    return ((h & ((1 << (hbits - 8)) - 1)) << 8) | (h >> (hbits - 8))


@jit
def pack_hit(rel, diag, qo):
    return (np.uint64(rel) << np.uint64(63)) | (np.uint64(diag + DIAG_OFFSET) << np.uint64(QO_BITS)) | np.uint64(qo)


@jit
def hit_rel(key):
    return np.int64(key >> np.uint64(63))


@jit
def hit_diag(key):
    return np.int64((key >> np.uint64(QO_BITS)) & np.uint64((1 << 47) - 1)) - DIAG_OFFSET


@jit
def hit_qo(key):
    return np.int64(key & np.uint64(QO_MASK))


@jit
def collect_hits(q, L, k, w, mzb, mzk, mzo, mzp, bits, use_occ, max_occ, max_hits,
                 sk_h, sk_p, sk_s, sk_scratch, order, rep_mark, hits):
    """Hits of read q[:L] (both orientations) into `hits`, sorted. Returns (n_hits, rep_bases):
    rep_bases = read bases covered only by minimizers seen more than max_occ times (repeats).
    Only minimizers seen at most use_occ times give hits; use_occ < max_occ is the cheap first
    tier of seeding (the caller falls back to use_occ = max_occ when that is not enough).
    With use_occ = max_occ and no minimizer rare enough, the rarest ones are used (up to max_hits)
    so that a read wholly inside a repeat still gets candidate loci (with a low mapping quality).
    Scratch: sk_* and order of length >= L, rep_mark uint8[L]."""
    nm = sketch_into(q, 0, L, k, w, sk_scratch, sk_h, sk_p, sk_s, 0)
    nh = 0
    for i in range(L):
        rep_mark[i] = 0
    n_used = 0
    for m in range(nm):
        lo, hi = lookup(sk_h[m], mzb, mzk, mzo, bits, 2 * k)
        cnt = hi - lo
        order[m] = cnt
        if cnt == 0:
            continue
        if cnt > max_occ or nh + cnt > max_hits:
            for t in range(sk_p[m], sk_p[m] + k):
                rep_mark[t] = 1
            continue
        if cnt > use_occ:
            continue
        n_used += 1
        qp = sk_p[m]
        for t in range(lo, hi):
            v = np.int64(mzp[t])
            rpos = v >> 1
            rel = (v & 1) ^ sk_s[m]
            qo = qp if rel == 0 else L - qp - k
            hits[nh] = pack_hit(rel, rpos - qo, qo)
            nh += 1
    if n_used == 0 and use_occ >= max_occ:
        # every minimizer is repetitive: take the rarest ones until the hit budget is used
        while True:
            best = -1
            for m in range(nm):
                if order[m] > 0 and (best < 0 or order[m] < order[best]):
                    best = m
            if best < 0 or nh + order[best] > max_hits:
                break
            lo, hi = lookup(sk_h[best], mzb, mzk, mzo, bits, 2 * k)
            qp = sk_p[best]
            for t in range(lo, hi):
                v = np.int64(mzp[t])
                rel = (v & 1) ^ sk_s[best]
                qo = qp if rel == 0 else L - qp - k
                hits[nh] = pack_hit(rel, (v >> 1) - qo, qo)
                nh += 1
            order[best] = 0
    rep = 0
    for i in range(L):
        rep += rep_mark[i]
    if nh > 1:
        hits[:nh].sort()
    return nh, rep


# ---------------------------------------------------------------- slow twin (plain Python)

def collect_hits_slow(q, L, k, w, index_dict, max_occ, max_hits, use_occ=None):
    """Same hits from a dict {hash: [(pos << 1) | strand, ...]} (tests build it from the arrays)."""
    from kernels.sketch import sketch_slow
    hs, ps, ss = sketch_slow(q[:L], k, w)
    hits, rep_mark, used = [], set(), 0
    counts = [len(index_dict.get(int(h), ())) for h in hs]
    for h, p, s, cnt in zip(hs, ps, ss, counts):
        occ = index_dict.get(int(h), ())
        if not occ:
            continue
        if cnt > max_occ or len(hits) + cnt > max_hits:
            rep_mark.update(range(p, p + k))
            continue
        if use_occ is not None and cnt > use_occ:
            continue
        used += 1
        for v in occ:
            rel = (v & 1) ^ int(s)
            qo = int(p) if rel == 0 else L - int(p) - k
            hits.append((rel, (v >> 1) - qo, qo))
    if used == 0 and (use_occ is None or use_occ >= max_occ):
        left = sorted((c, i) for i, c in enumerate(counts) if c > 0)
        for c, i in left:
            if len(hits) + c > max_hits:
                break
            for v in index_dict[int(hs[i])]:
                rel = (v & 1) ^ int(ss[i])
                qo = int(ps[i]) if rel == 0 else L - int(ps[i]) - k
                hits.append((rel, (v >> 1) - qo, qo))
    return sorted(hits), len(rep_mark)
