"""Sketch, index lookups, hits and loci against their slow twins."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels import index as gindex
from kernels.chain import LOCUS, cluster, cluster_slow, top_loci, top_loci_slow
from kernels.seed import collect_hits, collect_hits_slow, hit_diag, hit_qo, hit_rel, lookup
from kernels.sketch import sketch, sketch_slow


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 300), st.sampled_from([11, 15, 19, 21]), st.integers(1, 16))
def test_sketch_matches_slow_twin(seed, n, k, w):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, n).astype(np.uint8)
    if n and seed % 3 == 0:
        s[rng.integers(0, n, 4)] = 4           # N breaks the runs
    if n and seed % 5 == 0:
        s[: n // 2] = s[0] % 4                 # a homopolymer: equal hashes
    fast = sketch(s, k, w)
    slow = sketch_slow(s, k, w)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_sketch_same_minimizers_on_both_strands():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 4, 500).astype(np.uint8)
    rc = (3 - s[::-1]).astype(np.uint8)
    h1, p1, s1 = sketch(s, 19, 10)
    h2, p2, s2 = sketch(rc, 19, 10)
    # canonical hashes: the same k-mers are chosen, in reverse order, on the opposite strand
    np.testing.assert_array_equal(h1, h2[::-1])
    np.testing.assert_array_equal(p1, 500 - 19 - p2[::-1])
    np.testing.assert_array_equal(s1, 1 - s2[::-1])


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("idx")
    unit = "".join("ACGT"[x] for x in rng.integers(0, 4, 300))
    contigs = {
        "chrA": "".join("ACGT"[x] for x in rng.integers(0, 4, 3000)) + "N" * 200 + unit * 3,
        "chrB": unit + "".join("acgt"[x] for x in rng.integers(0, 4, 2000)),
    }
    fa = d / "ref.fa"
    fa.write_text("".join(f">{n} desc\n" + "\n".join(s[i:i + 60] for i in range(0, len(s), 60)) + "\n"
                          for n, s in contigs.items()))
    gindex.build(str(fa), str(d / "ref"), k=15, w=5)
    return gindex.load(str(d / "ref"))


def index_dict(idx):
    """{hash: [values]} rebuilt from the arrays the plain way (for the slow twin)."""
    ref = np.asarray(idx.seq)
    out = {}
    for c in idx.meta["contigs"]:
        h, p, s = sketch_slow(ref[c["offset"]:c["offset"] + c["length"]], idx.k, idx.w)
        for hh, pp, ss in zip(h, p, s):
            out.setdefault(int(hh), []).append(((int(pp) + c["offset"]) << 1) | int(ss))
    return out


def test_lookup_finds_every_minimizer(small_index):
    d = index_dict(small_index)
    for h, vals in d.items():
        lo, hi = lookup(np.uint64(h), small_index.mzb, small_index.mzk, small_index.mzo, small_index.bucket_bits,
                        2 * small_index.k)
        assert sorted(int(v) for v in small_index.mzp[lo:hi]) == sorted(vals)
    # an absent hash
    absent = max(d) + 1
    assert lookup(np.uint64(absent), small_index.mzb, small_index.mzk, small_index.mzo,
                  small_index.bucket_bits, 2 * small_index.k) == (0, 0)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 1), st.integers(40, 200), st.integers(1, 20))
def test_hits_and_loci_match_slow_twins(small_index, seed, contig, L, max_occ):
    rng = np.random.default_rng(seed)
    idx = small_index
    c = idx.meta["contigs"][contig]
    start = c["offset"] + int(rng.integers(0, c["length"] - L))
    q = np.asarray(idx.seq[start:start + L]).copy()
    q[q == 4] = 0
    if seed % 2:
        q = (3 - q[::-1]).astype(np.uint8)
    q[rng.integers(0, L, 2)] = rng.integers(0, 4, 2)
    k, w = idx.k, idx.w
    scratch = [np.empty(L + 1, t) for t in (np.uint64, np.int64, np.uint8, np.uint64, np.int64, np.uint8)]
    hits = np.empty(5000, np.uint64)
    use_occ = max_occ if seed % 3 else max(1, max_occ // 4)      # both tiers of seeding
    nh, rep = collect_hits(q, L, k, w, idx.mzb, idx.mzk, idx.mzo, idx.mzp, idx.bucket_bits, use_occ, max_occ, 5000,
                           *scratch, hits)
    fast = [(int(hit_rel(x)), int(hit_diag(x)), int(hit_qo(x))) for x in hits[:nh]]
    slow, rep_slow = collect_hits_slow(q, L, k, w, index_dict(idx), max_occ, 5000, use_occ)
    assert fast == slow and rep == rep_slow
    loci = np.empty(1000, LOCUS)
    nl = cluster(hits, nh, k, 64, loci, np.empty(nh + 1, np.int64))
    got = [(int(x["rel"]), int(x["dlo"]), int(x["dhi"]), int(x["nhits"]), int(x["cov"])) for x in loci[:nl]]
    assert got == cluster_slow(slow, k, 64)
    order = np.empty(5, np.int64)
    m = top_loci(loci, nl, 5, order, np.empty(nl + 1, np.int64))
    assert list(order[:m]) == top_loci_slow(got, 5)


def test_tandem_copies_are_separate_loci():
    # the same read part hitting two diagonals 50 apart is two copies, not an indel
    from kernels.seed import pack_hit
    hits = np.array(sorted([pack_hit(0, 1000, q) for q in (0, 30, 60)] +
                           [pack_hit(0, 1050, q) for q in (0, 30, 60)]), np.uint64)
    loci = np.empty(10, LOCUS)
    assert cluster(hits, len(hits), 19, 64, loci, np.empty(10, np.int64)) == 2
    # a deletion: the right part of the read on a higher diagonal joins the locus
    hits = np.array(sorted([pack_hit(0, 1000, q) for q in (0, 20)] + [pack_hit(0, 1030, q) for q in (80, 110)]),
                    np.uint64)
    assert cluster(hits, len(hits), 19, 64, loci, np.empty(10, np.int64)) == 1
    assert (loci[0]["dlo"], loci[0]["dhi"]) == (1000, 1030)
