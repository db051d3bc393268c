"""Extension: align a read to a reference locus, with soft clips at either end.

Two kernels, the fast path first:
* `ungapped`: the read on one diagonal (most reads: no indel), best clipped interval in O(L).
* `dp_fill` + `dp_traceback`: affine-gap alignment (Gotoh) in a band of diagonals around the
  seeds, the read aligned end to end or clipped at either end for the clip penalty, the
  reference free at both ends of the window. Traceback prefers a match over a gap, so gaps are
  placed leftmost (the convention variant callers expect).

Coordinates: a window is ref[ws:ws+W]; a cell (i, j) means read[:i] and window[:j] consumed;
its diagonal is d = j - i, and the band holds d in [dlo, dhi], stored at column k = d - dlo.
CIGAR ops use BAM's encoding (length << 4 | op), ops M=0 I=1 D=2 S=4.
Every kernel has a slow twin at the end of the file (plain Python), which the tests compare.
"""

from kernels._numba import jit
from kernels.scoring import CLIP, GAP_EXT, GAP_OPEN, MATCH, MISMATCH, N_PEN

OP_M, OP_I, OP_D, OP_S = 0, 1, 2, 4
NEG = -(1 << 28)
# traceback byte: bits 0-1 where H came from, bit 2 E extended, bit 3 F extended
TB_DIAG, TB_E, TB_F, TB_START = 0, 1, 2, 3
TB_E_EXT, TB_F_EXT = 4, 8


@jit
def base_score(q, r, p):
    if q > 3 or r > 3:
        return -p[N_PEN]
    if q == r:
        return p[MATCH]
    return -p[MISMATCH]


@jit
def ungapped(q, L, ref, rpos, lo, hi, p):
    """Read q[:L] placed with q[0] at reference position rpos (may hang off [lo, hi), the contig).
    Returns (score, qb, qe): the best interval q[qb:qe] to keep, the rest soft-clipped."""
    clip = p[CLIP]
    i_lo = lo - rpos if lo > rpos else 0
    i_hi = hi - rpos if hi - rpos < L else L
    if i_lo >= i_hi:
        return NEG, 0, 0
    best = NEG
    bq = i_lo
    be = i_lo
    pre = 0
    start_cost = clip if i_lo > 0 else 0      # prefix value of the best start: P[a] + clip*(a>0)
    start_at = i_lo
    for i in range(i_lo, i_hi):
        pre += base_score(q[i], ref[rpos + i], p)
        v = pre - start_cost - (clip if i + 1 < L else 0)
        if v >= best:                           # on a tie keep the longer alignment
            best = v
            bq = start_at
            be = i + 1
        c = pre + clip
        if c < start_cost:
            start_cost = c
            start_at = i + 1
    return best, bq, be


@jit
def dp_fill(q, L, ref, ws, W, dlo, dhi, p, Hp, Hc, Fp, Fc, tb):
    """Fill the banded matrices. Hp/Hc/Fp/Fc are int32 scratch rows of at least dhi-dlo+1 cells,
    tb uint8[(L+1) * (dhi-dlo+1)]. Returns (score, end_i, end_k): end_i < L means the read's end
    q[end_i:] is clipped."""
    B = dhi - dlo + 1
    oe = p[GAP_OPEN] + p[GAP_EXT]
    ge = p[GAP_EXT]
    clip = p[CLIP]
    for k in range(B):
        j = dlo + k
        Hp[k] = 0 if (j >= 0 and j <= W) else NEG
        Fp[k] = NEG
        tb[k] = TB_START
    best_clip = NEG
    bc_i = 0
    bc_k = 0
    for i in range(1, L + 1):
        qi = q[i - 1]
        e = NEG
        hleft = NEG
        row = i * B
        for k in range(B):
            j = i + dlo + k
            if j < 0 or j > W:
                Hc[k] = NEG
                Fc[k] = NEG
                tb[row + k] = TB_START
                e = NEG
                hleft = NEG
                continue
            h = NEG
            src = TB_DIAG
            if j >= 1 and Hp[k] > NEG:
                h = Hp[k] + base_score(qi, ref[ws + j - 1], p)
            # E: a deletion (reference consumed), from the cell on the left
            eo = hleft - oe
            ee = e - ge
            bits = 0
            if eo >= ee:
                e = eo
            else:
                e = ee
                bits |= TB_E_EXT
            # F: an insertion (read consumed), from the cell above
            f = NEG
            if k + 1 < B:
                fo = Hp[k + 1] - oe
                fe = Fp[k + 1] - ge
                if fo >= fe:
                    f = fo
                else:
                    f = fe
                    bits |= TB_F_EXT
            Fc[k] = f
            if e > h:
                h = e
                src = TB_E
            if f > h:
                h = f
                src = TB_F
            if -clip > h:
                h = -clip
                src = TB_START
            Hc[k] = h
            tb[row + k] = src | bits
            hleft = h
            if i < L and src == TB_DIAG and h - clip > best_clip:
                best_clip = h - clip
                bc_i = i
                bc_k = k
        for k in range(B):
            Hp[k] = Hc[k]
            Fp[k] = Fc[k]
    best = NEG
    bk = 0
    for k in range(B):
        if Hp[k] > best:
            best = Hp[k]
            bk = k
    if best >= best_clip:
        return best, L, bk
    return best_clip, bc_i, bc_k


@jit
def dp_traceback(tb, B, dlo, L, end_i, end_k, cigar, rev_ops, rev_lens):
    """Write the CIGAR (with soft clips) of the alignment ending at (end_i, end_k) into `cigar`.
    rev_ops/rev_lens are scratch of at least 2L+4. Returns (n_ops, j_start, qb): the alignment
    starts at window column j_start with read base qb."""
    n = 0
    if end_i < L:
        rev_ops[n] = OP_S
        rev_lens[n] = L - end_i
        n += 1
    i = end_i
    k = end_k
    state = 0   # 0 = H, 1 = E, 2 = F
    qb = 0
    while True:
        t = tb[i * B + k]
        if state == 0:
            src = t & 3
            if src == TB_START:
                qb = i
                break
            if src == TB_DIAG:
                op = OP_M
                i -= 1
            elif src == TB_E:
                state = 1
                continue
            else:
                state = 2
                continue
        elif state == 1:
            op = OP_D
            state = 1 if (t & TB_E_EXT) else 0
            k -= 1
        else:
            op = OP_I
            state = 2 if (t & TB_F_EXT) else 0
            i -= 1
            k += 1
        if n > 0 and rev_ops[n - 1] == op:
            rev_lens[n - 1] += 1
        else:
            rev_ops[n] = op
            rev_lens[n] = 1
            n += 1
    j_start = i + dlo + k
    if qb > 0:
        rev_ops[n] = OP_S
        rev_lens[n] = qb
        n += 1
    for t in range(n):
        cigar[t] = (rev_lens[n - 1 - t] << 4) | rev_ops[n - 1 - t]
    return n, j_start, qb


@jit
def cigar_ungapped(qb, qe, L, cigar):
    """CIGAR of an ungapped alignment q[qb:qe] with soft clips; returns the number of ops."""
    n = 0
    if qb > 0:
        cigar[n] = (qb << 4) | OP_S
        n += 1
    cigar[n] = ((qe - qb) << 4) | OP_M
    n += 1
    if qe < L:
        cigar[n] = ((L - qe) << 4) | OP_S
        n += 1
    return n


# ---------------------------------------------------------------- slow twins (plain Python)

def _bs(q, r, p):
    if q > 3 or r > 3:
        return -int(p[N_PEN])
    return int(p[MATCH]) if q == r else -int(p[MISMATCH])


def ungapped_slow(q, L, ref, rpos, lo, hi, p):
    """Every (qb, qe) tried: score of q[qb:qe] on the diagonal minus the clip penalties."""
    clip = int(p[CLIP])
    best = (NEG, 0, 0)
    for a in range(L):
        for b in range(a + 1, L + 1):
            if rpos + a < lo or rpos + b > hi:
                continue
            s = sum(_bs(q[i], ref[rpos + i], p) for i in range(a, b))
            s -= clip * (a > 0) + clip * (b < L)
            # tie: the later end, then the earlier start (what the fast kernel keeps)
            if (s, b, -a) > (best[0], best[2], -best[1]):
                best = (s, a, b)
    return best


def dp_slow(q, L, ref, ws, W, dlo, dhi, p):
    """The same recurrence over a full (L+1) x (W+1) matrix with cells outside the band forbidden.
    Returns (score, cigar ops as [(op, len)], ref start in window, qb)."""
    oe = int(p[GAP_OPEN] + p[GAP_EXT])
    ge = int(p[GAP_EXT])
    clip = int(p[CLIP])
    inband = lambda i, j: 0 <= j <= W and dlo <= j - i <= dhi  # noqa: E731
    H = [[NEG] * (W + 1) for _ in range(L + 1)]
    E = [[NEG] * (W + 1) for _ in range(L + 1)]
    F = [[NEG] * (W + 1) for _ in range(L + 1)]
    src = {}
    for j in range(W + 1):
        if inband(0, j):
            H[0][j] = 0
            src[(0, j)] = "start"
    best_clip = (NEG, 0, 0)
    for i in range(1, L + 1):
        for j in range(W + 1):
            if not inband(i, j):
                continue
            cands = []
            if j >= 1 and inband(i - 1, j - 1) and H[i - 1][j - 1] > NEG:
                cands.append((H[i - 1][j - 1] + _bs(q[i - 1], ref[ws + j - 1], p), 3, "diag"))
            if j >= 1 and inband(i, j - 1):
                E[i][j] = max(H[i][j - 1] - oe, E[i][j - 1] - ge)
            if inband(i - 1, j):
                F[i][j] = max(H[i - 1][j] - oe, F[i - 1][j] - ge)
            cands += [(E[i][j], 2, "E"), (F[i][j], 1, "F"), (-clip, 0, "start")]
            h, _, s = max(cands, key=lambda c: (c[0], c[1]))
            H[i][j] = h
            src[(i, j)] = s
            if i < L and s == "diag" and h - clip > best_clip[0]:
                best_clip = (h - clip, i, j)
    row = [(H[L][j], j) for j in range(W + 1) if inband(L, j)]
    best, bj = max(row, key=lambda t: (t[0], -t[1])) if row else (NEG, 0)
    if best >= best_clip[0]:
        score, ei, ej = best, L, bj
    else:
        score, ei, ej = best_clip
    # traceback over the stored matrices (recomputing the gap moves)
    ops = []
    if ei < L:
        ops.append((OP_S, L - ei))
    i, j, state = ei, ej, "H"
    while True:
        if state == "H":
            s = src[(i, j)]
            if s == "start":
                break
            if s == "diag":
                ops.append((OP_M, 1))
                i, j = i - 1, j - 1
                continue
            state = s
            continue
        if state == "E":
            ops.append((OP_D, 1))
            ext = E[i][j - 1] - ge if inband(i, j - 1) else NEG
            opn = H[i][j - 1] - oe
            state = "E" if ext > opn else "H"
            j -= 1
        else:
            ops.append((OP_I, 1))
            ext = F[i - 1][j] - ge if inband(i - 1, j) else NEG
            opn = H[i - 1][j] - oe
            state = "F" if ext > opn else "H"
            i -= 1
    qb = i
    if qb > 0:
        ops.append((OP_S, qb))
    ops.reverse()
    merged = []
    for op, ln in ops:
        if merged and merged[-1][0] == op:
            merged[-1] = (op, merged[-1][1] + ln)
        else:
            merged.append((op, ln))
    return score, merged, j, qb


def cigar_score(q, L, ref, rstart, cigar, p):
    """Score of an alignment recomputed from its CIGAR [(op, len)] (an invariant the tests check)."""
    clip = int(p[CLIP])
    s = 0
    qi = 0
    ri = rstart
    for op, ln in cigar:
        if op == OP_S:
            s -= clip
            qi += ln
        elif op == OP_M:
            for t in range(ln):
                s += _bs(q[qi + t], ref[ri + t], p)
            qi += ln
            ri += ln
        elif op == OP_I:
            s -= int(p[GAP_OPEN]) + ln * int(p[GAP_EXT])
            qi += ln
        elif op == OP_D:
            s -= int(p[GAP_OPEN]) + ln * int(p[GAP_EXT])
            ri += ln
    assert qi == L, "CIGAR does not consume the whole read"
    return s
