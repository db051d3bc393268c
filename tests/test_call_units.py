"""Calling kernels against their slow twins: BAM decoding, duplicate marking, pileup, likelihoods."""
import math

import numpy as np
import pysam
import pytest
from hypothesis import given, settings, strategies as st

from kernels.bamread import Reads, bgzf_size, concat, place, read_bam, read_bams, read_slow
from kernels.genotype import (genotype_table, posterior, read_vs_hap, read_vs_hap_slow, snp_likelihoods,
                              snp_likelihoods_slow)
from kernels.qualcal import CYCLE_BIN, NCYC, NQ
from kernels.qualcal import table as quality_table, table_slow as quality_table_slow
from kernels.bamheader import libraries
from kernels.markdup import mark_duplicates, mark_duplicates_slow
from kernels.pileup import pileup, pileup_slow

QERR = quality_table(np.zeros((NQ, NCYC)), np.zeros((NQ, NCYC)), 40)   # nominal rates, capped at Q40


def test_decoder_matches_pysam(tiny_bam):
    hdr = pysam.AlignmentFile(tiny_bam).header.to_dict()
    ids, _ = libraries(hdr)
    fast, _ = read_bam(tiny_bam, ids)
    slow = read_slow(tiny_bam, ids)
    assert fast.n == 40000
    for c in Reads.COLUMNS:
        np.testing.assert_array_equal(getattr(fast, c), np.array(slow[c], dtype=getattr(fast, c).dtype), err_msg=c)
    assert set(np.unique(fast.rg)) == {0} and (fast.ms > 0).all() and (fast.muc5 >= 0).sum() > 39000


def test_files_read_into_one_buffer(tmp_path, tiny_bam):
    """read_bams: each file inflated straight into its place in one buffer; the same records and
    columns as read one by one, joined without copying; a file that is not BGZF is read on its own;
    a file whose blocks lie about their size is refused."""
    import gzip
    import shutil
    whole, _ = read_bam(tiny_bam)
    a, b = str(tmp_path / "a.bam"), str(tmp_path / "b.bam")
    with pysam.AlignmentFile(tiny_bam) as f, pysam.AlignmentFile(a, "wb", template=f) as fa, \
            pysam.AlignmentFile(b, "wb", template=f) as fb:
        for i, r in enumerate(f):
            (fa if i < 15000 else fb).write(r)
    with gzip.open(tiny_bam) as f:
        assert bgzf_size(tiny_bam) == len(f.read())
    extra = read_bam(a)[0].take(np.arange(5)).compact()
    got, buf, at = read_bams([a, b], spare=len(extra.raw))
    assert at == len(buf) - len(extra.raw) and all(r.raw is buf for r, _ in got)
    joined = concat([r for r, _ in got] + [place(extra, buf, at)])
    assert joined.raw is buf and joined.n == whole.n + 5
    for c in Reads.COLUMNS:
        np.testing.assert_array_equal(getattr(joined, c)[:whole.n], getattr(whole, c), err_msg=c)
        np.testing.assert_array_equal(getattr(joined, c)[whole.n:], getattr(whole, c)[:5], err_msg=c)
    np.testing.assert_array_equal(joined.record_bytes(), np.concatenate([whole.record_bytes(),
                                                                          whole.record_bytes(0, 5)]))
    plain = str(tmp_path / "plain.bam")                 # one gzip member, not BGZF blocks
    with gzip.open(tiny_bam) as f, gzip.open(plain, "wb") as g:
        shutil.copyfileobj(f, g)
    assert bgzf_size(plain) is None and bgzf_size(str(tmp_path / "none.bam")) is None
    from kernels.errors import InputError
    with pytest.raises(InputError, match="not BGZF"):
        read_bams([a, plain])
    with pytest.raises(Exception, match="inflates to"):
        buf = np.empty(bgzf_size(a) + 10, np.uint8)
        read_bam(a, into=(buf, 0, bgzf_size(a) + 10))


# ------------------------------------------------------------------ duplicate marking

def synthetic_reads(rng, n):
    """Reads columns with many coinciding 5' ends (duplicates), fragments, unmapped mates."""
    tid = rng.integers(0, 2, n).astype(np.int32)
    pos = rng.integers(0, 40, n).astype(np.int64) * 3
    flag = (1 | np.where(rng.random(n) < 0.5, 16, 0) | np.where(rng.random(n) < 0.5, 32, 0)
            | np.where(rng.random(n) < 0.1, 8, 0) | np.where(rng.random(n) < 0.03, 4, 0)).astype(np.uint16)
    flag = np.where(rng.random(n) < 0.1, flag & ~np.uint16(1) & ~np.uint16(8), flag).astype(np.uint16)
    span = rng.integers(90, 101, n)
    clip = rng.integers(0, 3, n)
    cols = dict(tid=tid, pos=pos, end=pos + span, flag=flag, mapq=np.full(n, 60, np.uint8),
                mtid=rng.integers(0, 2, n).astype(np.int32), mpos=rng.integers(0, 40, n).astype(np.int64) * 3,
                ustart=pos - clip, uend=pos + span + clip,
                muc5=np.where(rng.random(n) < 0.95, rng.integers(0, 40, n) * 3, -1).astype(np.int64),
                score=rng.integers(1000, 1010, n).astype(np.int32), ms=rng.integers(1000, 1010, n).astype(np.int32),
                rg=rng.integers(-1, 2, n).astype(np.int32), namehash=rng.integers(0, 2 ** 63, n).astype(np.uint64))
    # pairs: both records of a template share name hash and pair score
    half = n // 2
    cols["namehash"][half:2 * half] = cols["namehash"][:half]
    return Reads(np.zeros(1, np.uint8), np.zeros(n, np.int64), **cols)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_markdup_matches_slow_twin(seed):
    rng = np.random.default_rng(seed)
    reads = synthetic_reads(rng, 400)
    libs = [0, 1]
    np.testing.assert_array_equal(mark_duplicates(reads, libs), mark_duplicates_slow(reads, libs))


def test_markdup_rules():
    """The best pair is kept whatever the order; a fragment at a pair's end is a duplicate."""
    rng = np.random.default_rng(5)
    reads = synthetic_reads(rng, 8)
    f = np.array([1 | 32, 1 | 16, 1 | 32, 1 | 16, 1 | 8, 1 | 8, 1 | 32, 0], np.uint16)
    reads.flag = f
    reads.tid[:] = 0
    reads.mtid[:] = 0
    # pair A (records 0,1) and pair B (2,3) share both 5' ends; B scores higher
    reads.ustart[:] = [100, 0, 100, 0, 100, 300, 500, 300]
    reads.uend[:] = [200, 401, 200, 401, 200, 400, 600, 400]
    reads.muc5[:] = [400, 100, 400, 100, -1, -1, 700, -1]
    reads.score[:] = [1000, 1000, 1005, 1005, 2000, 1000, 1000, 900]
    reads.ms[:] = [1000, 1000, 1005, 1005, -1, -1, 1000, -1]
    reads.namehash[:] = [7, 7, 9, 9, 11, 12, 13, 14]
    reads.rg[:] = -1
    dup = mark_duplicates(reads, [])
    # A is the duplicate of B; record 4 (fragment at A/B's left end) is a duplicate of a pair;
    # fragments 5 and 7 share an end: the better (5) is kept
    assert list(dup) == [True, True, False, False, True, False, False, True]
    order = np.random.default_rng(1).permutation(8)
    assert list(mark_duplicates(reads.take(order), [])) == list(dup[order])


# ------------------------------------------------------------------ pileup

def decode_reads(bam, region):
    out = []
    with pysam.AlignmentFile(bam) as f:
        for r in f.fetch(*region):
            codes = np.array(["ACGT".find(c) if c in "ACGT" else 4 for c in r.query_sequence], np.uint8)
            out.append((r.reference_start, r.cigartuples, codes, np.array(r.query_qualities, np.uint8)))
    return out


def test_pileup_matches_slow_twin(tmp_path, tiny, tiny_bam):
    import subprocess
    srt = str(tmp_path / "s.bam")
    subprocess.run(["samtools", "sort", "-o", srt, tiny_bam], check=True, capture_output=True)
    subprocess.run(["samtools", "index", srt], check=True)
    from kernels.fasta import read_fasta
    ref = read_fasta(tiny["ref"])
    contig = ref.seq[ref.offsets[1]:ref.offsets[2]]
    chrom = ref.names[1]
    ws, we = 200000, 400000
    reads, _ = read_bam(srt, [])
    sel = np.flatnonzero((reads.tid == 1) & (reads.pos >= ws - 300) & (reads.pos < we) & ((reads.flag & 4) == 0))
    cnt = np.zeros((we - ws, 4), np.int32)
    depth = np.zeros(we - ws, np.int32)
    ev = (np.empty(5000, np.int64), np.empty(5000, np.int64), np.empty(5000, np.int64), np.empty(5000, np.uint64),
          np.empty(50000, np.uint8))
    ne = pileup(reads.raw, reads.roff, sel, reads.pos, contig, ws, we, 13, cnt, depth, *ev)
    scnt, sdepth, sev = pileup_slow(decode_reads(srt, (chrom, ws - 300, we)), contig, ws, we, 13)
    got = {(ws + int(p), int(b)): int(cnt[p, b]) for p, b in zip(*np.nonzero(cnt))}
    assert got == scnt
    assert {ws + int(p): int(depth[p]) for p in np.flatnonzero(depth)} == sdepth
    fast_ev = sorted((int(ev[0][i]), int(ev[1][i]), tuple(int(x) for x in ev[4][ev[2][i]:ev[2][i] + ev[1][i]])
                      if ev[1][i] > 0 else ()) for i in range(ne))
    assert fast_ev == sorted(sev) and ne > 0


def test_pileup_normalises_indels_and_reads_clips():
    """A deletion written at three places in a homopolymer is one event; a clip hiding an insertion
    yields that insertion."""
    ref = np.array([0, 1, 2, 3] * 10 + [0] * 8 + [1, 3, 2, 1] * 10, np.uint8)   # 40 bp, AAAAAAAA, 40 bp
    L = 60
    reads = []
    for at in (41, 44, 47):                                  # delete one A at several places
        seq = np.concatenate([ref[10:at], ref[at + 1:10 + L + 1]])
        reads.append((10, [(0, at - 10), (2, 1), (0, L - (at - 10))], seq, np.full(L, 30, np.uint8)))
    ins = np.array([2, 2, 3, 1, 0], np.uint8)                # 5 bases inserted after ref[59]
    seq = np.concatenate([ref[20:60], ins, ref[60:75]])
    reads.append((20, [(0, 40), (4, 20)], seq, np.full(60, 30, np.uint8)))
    cnt, depth, events = pileup_slow(reads, ref, 0, len(ref), 13)
    assert events[:3] == [(39, -1, ())] * 3                  # anchored before the A run
    assert events[3] == (59, 5, tuple(int(x) for x in ins))


# ------------------------------------------------------------------ likelihoods

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(2, 41), st.integers(0, 149), st.sampled_from([0, 20, 60])),
                min_size=0, max_size=30), st.integers(2, 3))
def test_snp_likelihoods_match_slow_twin(bases, k):
    """Hand-built pileups (any bases, qualities, cycles, mapping qualities) at one site."""
    alleles = [0, 2, 3][:k]
    gl, ad, dp = snp_likelihoods_slow(bases, alleles, QERR)
    # the fast kernel reads BAM records: build one-base records for it
    raw, roff, pos, mapq, flag = _one_base_records(bases)
    g = np.zeros((1, 6))
    a = np.zeros((1, 3), np.int64)
    d = np.zeros(1, np.int64)
    al = np.zeros((1, 3), np.uint8)
    al[0, :k] = alleles
    snp_likelihoods(raw, roff, np.arange(len(bases)), pos, mapq, flag, 0, 1, np.array([0], np.int32), al,
                    np.array([k]), 0, QERR, g, a, d)
    np.testing.assert_allclose(g[0, :len(gl)], gl, rtol=1e-12, atol=1e-9)
    assert list(a[0, :k]) == ad and d[0] == dp


def _one_base_records(bases):
    """BAM records of reads covering position 0 with one base each at the given cycle."""
    from kernels.dna import BAM_NT16 as _NT16
    raw = bytearray()
    roff, pos, mapq, flag = [], [], [], []
    for b, q, cyc, mq in bases:
        L = cyc + 1
        rev = cyc % 2 == 1
        i = (L - 1 - cyc) if rev else cyc                    # the base sits at cycle `cyc`
        codes = [0] * L
        codes[i] = b
        quals = [30] * L
        quals[i] = q
        # bases before i soft-clipped, base i aligned at 0, the rest clipped: CIGAR iS 1M (L-i-1)S
        ops = ([(i << 4) | 4] if i else []) + [(1 << 4) | 0] + ([((L - i - 1) << 4) | 4] if L - i - 1 else [])
        nt = [_NT16[c] for c in codes] + [0]
        packed = bytes((nt[t] << 4) | nt[t + 1] for t in range(0, L, 2))
        body = (np.array([0, 0], np.int32).tobytes() + bytes([2, mq]) + np.uint16(4680).tobytes()
                + np.uint16(len(ops)).tobytes() + np.uint16(16 if rev else 0).tobytes() + np.int32(L).tobytes()
                + np.array([-1, -1, 0], np.int32).tobytes() + b"r\0" + np.array(ops, np.uint32).tobytes()
                + packed + bytes(quals))
        roff.append(len(raw))
        raw += np.int32(len(body)).tobytes() + body
        pos.append(0)
        mapq.append(mq)
        flag.append(16 if rev else 0)
    return (np.frombuffer(bytes(raw), np.uint8), np.array(roff, np.int64), np.array(pos, np.int64),
            np.array(mapq, np.uint8), np.array(flag, np.uint16))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(5, 25), st.integers(0, 3), st.booleans())
def test_read_vs_hap_matches_slow_twin(seed, L, w, rev):
    rng = np.random.default_rng(seed)
    hap = rng.integers(0, 4, L + 20).astype(np.uint8)
    start = int(rng.integers(0, 15))
    read = hap[start:start + L].copy()
    if seed % 3 == 0:
        read = np.concatenate([read[:L // 2], read[L // 2 + 1:], rng.integers(0, 4, 1).astype(np.uint8)])
    read[rng.integers(0, L, 2)] = rng.integers(0, 5, 2)
    qual = rng.integers(2, 41, L).astype(np.uint8)
    d0 = start + int(rng.integers(-2, 3))
    scratch = [np.empty(2 * w + 1) for _ in range(6)]
    fast = read_vs_hap(read, qual, 60, rev, QERR, L, hap, len(hap), d0, w, *scratch)
    slow = read_vs_hap_slow(read, qual, 60, rev, QERR, hap, d0, w)
    assert math.isclose(fast, slow, rel_tol=1e-12, abs_tol=1e-9)


def test_posterior_orders_and_quality():
    # 10 reads: 5 alt -> het, clearly
    gl = np.array([5 * math.log(1e-3 / 3) + 5 * math.log(1 - 1e-3), 10 * math.log(0.5),
                   5 * math.log(1e-3 / 3) + 5 * math.log(1 - 1e-3)])
    best, qual, gq, pl, gt = posterior(gl, 2, 1e-3)
    assert gt == (0, 1) and qual > 100 and gq == 99 and pl[1] == 0
    assert genotype_table(3) == [(0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)]


def test_quality_table_measures_errors():
    tot = np.zeros((NQ, NCYC))
    mm = np.zeros((NQ, NCYC))
    tot[40, :5] = 100000
    mm[40, :5] = 300                        # reported Q40, measured ~Q25
    tot[40, 10] = 100000
    mm[40, 10] = 10                         # late cycles: ~Q40
    t = quality_table(tot, mm, 40)
    assert abs(-10 * math.log10(t[40, 0]) - 25.2) < 0.2
    assert t[40, 10] < t[40, 0]
    assert (np.diff(t[:, 0]) <= 0).all()    # never worse at a higher quality
    assert CYCLE_BIN * NCYC >= 300


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 12), scale=st.sampled_from([10, 1000, 10**7]),
       max_bq=st.integers(20, 60))
def test_quality_table_equals_its_slow_twin(seed, rows, scale, max_bq):
    """Summed-area sums against numpy slices summed cell by cell: the same table, bit for bit, for
    sparse and dense counts (pooling over cycles, then qualities, or giving up when all is thin)."""
    rng = np.random.default_rng(seed)
    tot = np.zeros((NQ, NCYC), np.int64)
    qs = rng.choice(NQ, rows, replace=False)
    tot[qs] = rng.integers(0, scale, (rows, NCYC)) * (rng.random((rows, NCYC)) < 0.7)
    mm = np.minimum(tot, rng.integers(0, max(2, scale // 50), (NQ, NCYC)))
    fast, slow = quality_table(tot, mm, max_bq), quality_table_slow(tot, mm, max_bq)
    assert fast.shape == (NQ, NCYC) and np.array_equal(fast, slow)
