"""The region planner: contiguous, complete, balanced by non-N bases, cuts in N runs when near."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from master import planner
from master.planner import Contig


def contig_from_codes(name, codes):
    s, e = planner.n_runs(codes)
    return Contig(name, len(codes), s, e)


@st.composite
def genomes(draw):
    """1-4 contigs, each a few segments of bases and N runs."""
    contigs = []
    for c in range(draw(st.integers(1, 4))):
        segs = draw(st.lists(st.tuples(st.booleans(), st.integers(1, 400)), min_size=1, max_size=8))
        codes = np.concatenate([np.full(n, 4 if isn else 0, np.uint8) for isn, n in segs])
        contigs.append(contig_from_codes(f"c{c}", codes))
    return contigs


def weight_brute(c, a, b):
    isn = np.zeros(c.length, bool)
    for s, e in zip(c.nstarts, c.nends):
        isn[s:e] = True
    return int((~isn[a:b]).sum())


@settings(max_examples=300, deadline=None)
@given(genomes(), st.integers(0, 12))
def test_partition_is_contiguous_complete_and_exact_in_count(contigs, extra):
    k = len(contigs) + extra
    if any(c.length < k for c in contigs):
        k = len(contigs)
    regions = planner.plan(contigs, k)
    assert len(regions) == k
    assert [r.index for r in regions] == list(range(k))
    by = {}
    for r in regions:
        by.setdefault(r.contig, []).append(r)
    assert list(by) == [c.name for c in contigs]              # genome order, every contig
    for c in contigs:
        rs = by[c.name]
        assert rs[0].start == 0 and rs[-1].end == c.length
        for a, b in zip(rs, rs[1:]):
            assert a.end == b.start                           # no gap, no overlap
        for r in rs:
            assert r.end > r.start                            # none empty
            assert r.weight == weight_brute(c, r.start, r.end)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 10 ** 6), min_size=1, max_size=5), st.integers(0, 8))
def test_allocation_minimises_the_heaviest_region(weights, extra):
    k = len(weights) + extra
    got = planner.allocate(weights, k)
    assert sum(got) == k and min(got) >= 1
    best = min(max(w / n for w, n in zip(weights, combo))
               for combo in itertools.product(range(1, extra + 2), repeat=len(weights)) if sum(combo) == k)
    assert max(w / n for w, n in zip(weights, got)) == pytest.approx(best)


@settings(max_examples=200, deadline=None)
@given(st.integers(1000, 50000), st.integers(2, 20))
def test_without_n_runs_regions_are_balanced_to_a_base(length, k):
    c = Contig("c", length, np.empty(0, np.int64), np.empty(0, np.int64))
    w = [r.weight for r in planner.plan([c], k)]
    assert max(w) - min(w) <= 1


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 12), st.data())
def test_balance_is_within_the_tolerance(k, data):
    """Every region's weight is within +-tol*ideal (plus rounding) of the ideal W/k."""
    segs = data.draw(st.lists(st.tuples(st.integers(500, 5000), st.integers(0, 300)), min_size=1, max_size=10))
    codes = np.concatenate([np.concatenate([np.zeros(a, np.uint8), np.full(n, 4, np.uint8)]) for a, n in segs])
    c = contig_from_codes("c", codes)
    tol = 0.1
    regions = planner.plan([c], k, tol=tol)
    ideal = c.weight / k
    for r in regions:
        assert abs(r.weight - ideal) <= 2 * tol * ideal + 2


def test_cuts_go_into_an_n_run_near_the_ideal_cut():
    # 10,000 bases, an N run of 100 at 4,950..5,050 (near the middle), 2 regions
    codes = np.zeros(10100, np.uint8)
    codes[4950:5050] = 4
    c = contig_from_codes("c", codes)
    r0, r1 = planner.plan([c], 2)
    assert 4950 <= r0.end < 5050
    # far from any N run, the cut is at the ideal point
    codes = np.zeros(10000, np.uint8)
    codes[100:200] = 4
    c = contig_from_codes("c", codes)
    r0, r1 = planner.plan([c], 2)
    assert r0.weight == r1.weight


def test_the_shipped_reference_gap_gets_a_cut(tiny_index):
    """chr20_34000001_35500000 has a 50 kb N gap: with enough regions a cut falls inside it."""
    contigs = planner.contigs_of_index(tiny_index)
    gap = next(c for c in contigs if len(c.nstarts))
    big = max(range(len(gap.nstarts)), key=lambda i: gap.nends[i] - gap.nstarts[i])
    gs, ge = int(gap.nstarts[big]), int(gap.nends[big])
    assert ge - gs >= 50000
    in_gap = []
    for k in range(3, 41):
        regions = planner.plan(contigs, k)
        cuts = [r.end for r in regions if r.contig == gap.name][:-1]
        if any(gs <= x < ge for x in cuts):
            in_gap.append(k)
            ideal = sum(c.weight for c in contigs) / k
            assert max(r.weight for r in regions) <= 1.6 * ideal      # still balanced
    assert in_gap, "no plan of 3..40 regions cut inside the 50 kb gap"
    lo, hi = planner.region_range(contigs, 4096)
    assert lo == 3 and hi == sum(c.weight for c in contigs) // planner.MIN_REGION_BASES


def test_bad_counts_are_refused():
    c = Contig("c", 10, np.empty(0, np.int64), np.empty(0, np.int64))
    with pytest.raises(ValueError):
        planner.plan([c, c], 1)
    with pytest.raises(ValueError):
        planner.plan([c], 11)
    with pytest.raises(ValueError):
        planner.plan([c], 0)


def test_bed_round_trip(tmp_path):
    c = Contig("chrA", 5000, np.array([1000]), np.array([1200]))
    regions = planner.plan([c], 3)
    planner.write_bed(regions, str(tmp_path / "r.bed"))
    back = planner.read_bed(str(tmp_path / "r.bed"))
    assert [(r.contig, r.start, r.end) for r in back] == [(r.contig, r.start, r.end) for r in regions]
    assert regions[0].spec == f"chrA:1-{regions[0].end}"


# ------------------------------------------------------------------ plans sized by the work

def _genome(n_big=3, big=5_000_000, n_small=40, small=20_000, n_alt=5, n_decoy=30):
    z = np.empty(0, np.int64)
    cs = [Contig(f"chr{i + 1}", big, np.array([big // 2]), np.array([big // 2 + 50_000])) for i in range(n_big)]
    cs += [Contig(f"chrUn_{i}", small, z, z) for i in range(n_small)]
    cs += [Contig(f"chr1_{i}_alt", 100_000, z, z, "alt") for i in range(n_alt)]
    cs += [Contig(f"chrUn_{i}_decoy", 5_000, z, z, "decoy") for i in range(n_decoy)]
    cs += [Contig("HLA-A*01:01:01:01", 3_000, z, z, "hla")]
    return cs


@settings(max_examples=60, deadline=None)
@given(st.integers(1_000, 50_000_000), st.integers(0, 60))
def test_work_plan_tiles_every_contig_and_shards_are_runs_of_one_kind(pairs, regions):
    cs = _genome()
    p = planner.make_plan(cs, pairs, regions=regions or None)
    # the pieces tile every contig, in order, without gaps
    by = {}
    for r in p.pieces:
        by.setdefault(r.contig, []).append(r)
    assert list(by) == [c.name for c in cs]
    for c in cs:
        rs = by[c.name]
        assert rs[0].start == 0 and rs[-1].end == c.length and all(a.end == b.start for a, b in zip(rs, rs[1:]))
    # the shards are consecutive runs of pieces covering them all; one kind each (called or carried)
    assert [s.first for s in p.shards] == [0] + [s.last + 1 for s in p.shards[:-1]]
    assert p.shards[-1].last == len(p.pieces) - 1
    kind = {c.name: c.kind for c in cs}
    for s in p.shards:
        kinds = {kind[r.contig] == "primary" for r in s.intervals(p.pieces)}
        assert kinds == {s.calls}
    assert sum(s.pairs for s in p.shards) == pytest.approx(pairs, rel=1e-6)


def test_work_plan_sizes_shards_and_chunks_by_the_sample():
    cs = _genome()
    small = planner.make_plan(cs, 20_000)
    assert sum(s.calls for s in small.shards) == 1 and small.chunk_pairs == 5_000 and small.tasks()["align"] == 4
    big = planner.make_plan(cs, 4_000_000)
    called = [s for s in big.shards if s.calls]
    assert abs(len(called) - 20) <= 2                            # 4M pairs / 200k, cut in whole pieces
    w = [s.weight for s in called]
    assert max(w) <= 1.6 * min(w) and big.chunk_pairs == 1_000_000
    # the small contigs are packed together, the big ones cut; ALT/decoy/HLA in shards of their own
    packed = [s for s in called if s.last > s.first]
    assert packed and all(big.pieces[i].contig.startswith("chrUn_") for s in packed for i in range(s.first, s.last + 1))
    carry = [s for s in big.shards if not s.calls]
    assert carry and {big.pieces[i].contig.split("_")[-1] for s in carry for i in range(s.first, s.last + 1)} \
        == {"alt", "decoy", "HLA-A*01:01:01:01"}
    # a 30x human: ~2,000 call shards and a few hundred align chunks
    human = planner.make_plan(cs, 400_000_000)
    assert human.chunk_pairs == 2_000_000 and human.tasks()["align"] == 200
    assert abs(sum(s.calls for s in human.shards) - 2000) <= 20 or sum(c.weight for c in cs) / 2000 < 100_000
    d = human.to_dict({"align": {"memory_mb": 1, "cpus": 2}})
    assert set(d) >= {"regions", "tasks", "memory_mb"} and d["regions"][0]["intervals"][0][0] == "chr1"


def test_a_backend_that_runs_few_tasks_at_once_gets_few_small_tasks_and_big_samples_keep_theirs():
    """Tasks beyond what the backend runs at once only add their fixed cost: with 1 at a time a
    small sample is one align chunk and as few call shards as the pieces allow; a 30x genome keeps
    its chunks (2M pairs) and shards no bigger than MAX_PAIRS_PER_CALL (their memory)."""
    cs = _genome()
    one = planner.make_plan(cs, 400_000, parallel=1)
    assert one.tasks()["align"] == 1 and one.chunk_pairs == 400_000
    four = planner.make_plan(cs, 400_000, parallel=4)
    assert four.tasks()["align"] == 4 and four.tasks()["call"] >= one.tasks()["call"]
    assert sum(s.calls for s in one.shards) < sum(s.calls for s in planner.make_plan(cs, 400_000).shards)
    human = planner.make_plan(cs, 400_000_000, parallel=1)
    assert human.tasks()["align"] == 200
    called = [s for s in human.shards if s.calls]
    assert 360 <= len(called) <= 440 and max(s.pairs for s in called) <= 1.6 * planner.MAX_PAIRS_PER_CALL
    # the hint from the settings: the local backend's cores over a task's threads, else unknown
    from master import settings as settings_mod
    s = settings_mod.load("/nonexistent-home", local_slots=8, threads=2)
    assert planner.parallel_of(s) == 4
    s.backend = "slurm"
    assert planner.parallel_of(s) is None
    s.parallel_tasks = 16
    assert planner.parallel_of(s) == 16


def test_work_plan_from_the_index_reads_no_bases(tiny_index):
    cs = planner.contigs_of_index(tiny_index)
    assert [c.kind for c in cs] == ["primary"] * 3
    gap = next(c for c in cs if len(c.nstarts))
    assert int((gap.nends - gap.nstarts).max()) >= 50_000
    p = planner.make_plan(cs, 2_000_000)
    assert len(p.shards) == 10 and all(s.calls for s in p.shards)
