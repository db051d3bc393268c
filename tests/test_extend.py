"""Extension kernels against their slow twins, plus the CIGAR invariants."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels.extend import (NEG, OP_D, OP_I, OP_M, OP_S, cigar_score, dp_fill, dp_slow, dp_traceback,
                            ungapped, ungapped_slow)
from kernels.scoring import params

P = params()


def run_dp(q, ref, ws, W, dlo, dhi, p=P):
    L = len(q)
    B = dhi - dlo + 1
    Hp, Hc, Fp, Fc = (np.empty(B, np.int32) for _ in range(4))
    tb = np.empty((L + 1) * B, np.uint8)
    score, ei, ek = dp_fill(q, L, ref, ws, W, dlo, dhi, p, Hp, Hc, Fp, Fc, tb)
    cig = np.empty(2 * L + 8, np.uint32)
    rops = np.empty(2 * L + 8, np.int64)
    rlens = np.empty(2 * L + 8, np.int64)
    n, j0, qb = dp_traceback(tb, B, dlo, L, ei, ek, cig, rops, rlens)
    ops = [(int(c) & 15, int(c) >> 4) for c in cig[:n]]
    return score, ops, j0, qb


def mutate(rng, seq, n_sub, indels):
    """Apply substitutions and (position, length, kind) indels to a code array."""
    s = list(seq)
    for _ in range(n_sub):
        i = rng.integers(0, len(s))
        s[i] = (s[i] + rng.integers(1, 4)) % 4
    for pos, ln, kind in sorted(indels, reverse=True):
        pos = min(pos, len(s))
        if kind == "ins":
            s[pos:pos] = list(rng.integers(0, 4, ln))
        else:
            del s[pos:pos + ln]
    return np.array(s, np.uint8)


# ------------------------------------------------------------------ ungapped

@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 60), st.integers(-20, 20), st.booleans())
def test_ungapped_matches_slow_twin(seed, L, shift, with_n):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 4, 200).astype(np.uint8)
    if with_n:
        ref[rng.integers(0, 200, 5)] = 4
    rpos = 70 + shift
    q = ref[rpos:rpos + L].copy() if rpos >= 0 else ref[:L].copy()
    q = mutate(rng, q, int(rng.integers(0, 6)), [])[:L]
    L = len(q)
    lo, hi = int(rng.integers(0, 80)), int(rng.integers(120, 201))
    fast = ungapped(q, L, ref, rpos, lo, hi, P)
    slow = ungapped_slow(q, L, ref, rpos, lo, hi, P)
    assert tuple(int(x) for x in fast) == slow


def test_ungapped_perfect_and_clipped():
    ref = np.array([0, 1, 2, 3] * 40, np.uint8)
    q = ref[10:110].copy()
    assert ungapped(q, 100, ref, 10, 0, len(ref), P) == (100, 0, 100)
    # mismatches in the last 3 bases: clipping them (-5) beats aligning them (-12)
    q2 = q.copy()
    q2[97:] = (q2[97:] + 1) % 4
    assert ungapped(q2, 100, ref, 10, 0, len(ref), P) == (97 - 5, 0, 97)
    # read hanging off the contig end is clipped there
    s, qb, qe = ungapped(q, 100, ref, 10, 0, 60, P)
    assert (qb, qe) == (0, 50) and s == 50 - 5


def test_ungapped_outside_contig():
    ref = np.zeros(50, np.uint8)
    assert ungapped(np.zeros(10, np.uint8), 10, ref, 45, 0, 40, P)[0] == NEG


# ------------------------------------------------------------------ banded DP

@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(8, 40), st.integers(0, 3), st.integers(0, 2))
def test_dp_matches_slow_twin(seed, L, nsub, nindel):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 4, L + 40).astype(np.uint8)
    start = int(rng.integers(0, 20))
    indels = [(int(rng.integers(1, L)), int(rng.integers(1, 4)), str(rng.choice(["ins", "del"])))
              for _ in range(nindel)]
    q = mutate(rng, ref[start:start + L], nsub, indels)
    L = len(q)
    W = len(ref)
    dlo, dhi = start - 6, start + 6
    fast = run_dp(q, ref, 0, W, dlo, dhi)
    slow = dp_slow(q, L, ref, 0, W, dlo, dhi, P)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1] and fast[2] == slow[2] and fast[3] == slow[3]
    # invariants: the CIGAR consumes the read, and rescoring it gives the score
    assert sum(n for op, n in fast[1] if op in (OP_M, OP_I, OP_S)) == L
    assert cigar_score(q, L, ref, fast[2], fast[1], P) == fast[0]


@pytest.mark.parametrize("kind,ln", [("del", 1), ("del", 7), ("del", 18), ("ins", 1), ("ins", 5), ("ins", 15)])
def test_dp_finds_indel(kind, ln):
    rng = np.random.default_rng(ln)
    ref = rng.integers(0, 4, 400).astype(np.uint8)
    q = mutate(rng, ref[100:250], 0, [(70, ln, kind)])
    L = len(q)
    score, ops, j0, qb = run_dp(q, ref, 0, 400, 100 - 20, 100 + 20)
    op = OP_D if kind == "del" else OP_I
    assert (op, ln) in ops
    assert j0 == 100 and qb == 0
    assert score == L - (6 + ln) if kind == "del" else score == (L - ln) - (6 + ln)
    assert cigar_score(q, L, ref, j0, ops, P) == score


def test_dp_left_aligns_gap_in_homopolymer():
    # deleting one A of AAAAA: the gap goes at the run's left end
    ref = np.array([1, 2, 3, 1, 2, 0, 0, 0, 0, 0, 3, 2, 1, 3, 2, 1, 3, 3, 2, 1], np.uint8)
    q = np.concatenate([ref[:6], ref[7:]])
    score, ops, j0, qb = run_dp(q, ref, 0, len(ref), -3, 3)
    assert ops == [(OP_M, 5), (OP_D, 1), (OP_M, len(q) - 5)]


def test_dp_soft_clips_junk_ends():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, 300).astype(np.uint8)
    junk = (ref[100:110] + 2) % 4
    q = np.concatenate([junk, ref[110:200]])
    score, ops, j0, qb = run_dp(q, ref, 0, 300, 80, 120)
    assert ops[0] == (OP_S, 10) and qb == 10 and j0 == 110
    assert score == 90 - 5
