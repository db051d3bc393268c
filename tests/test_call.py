"""kernels.call end to end: hand-made pileups, the shipped sample under any sharding, BAM output,
MPI ranks, bad input."""
import gzip
import json
import os
import random
import subprocess
import sys

import pysam
import pytest
from hypothesis import given, settings, strategies as st

from conftest import need, venv_bin


def cli(*args, module="kernels.call"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)


def records(vcf):
    with gzip.open(vcf, "rt") as f:
        return [ln for ln in f if not ln.startswith("#")]


def sites(vcf):
    out = {}
    for ln in records(vcf):
        f = ln.split("\t")
        out[(f[0], int(f[1]), f[3], f[4])] = (f[6], f[9].split(":")[0], f[9])
    return out


# ------------------------------------------------------------------ hand-made pileups

class Pileup:
    """A small reference and reads written one by one (positions, CIGARs, bases and qualities)."""

    def __init__(self, tmp, seed=3, length=3000):
        rng = random.Random(seed)
        self.ref = [rng.choice("ACGT") for _ in range(length)]
        self.tmp = tmp
        self.reads = []
        self.n = 0

    def set_ref(self, pos, seq):
        self.ref[pos:pos + len(seq)] = list(seq)

    def read(self, pos, cigar, seq, qual=35, rev=False, mapq=60):
        self.reads.append((pos, cigar, seq, qual, rev, mapq))

    def window(self, a, b):
        return "".join(self.ref[a:b])

    def call(self, *extra):
        fa = self.tmp / "ref.fa"
        fa.write_text(">c\n" + "".join(self.ref) + "\n")
        hdr = pysam.AlignmentHeader.from_dict({"HD": {"VN": "1.6", "SO": "unsorted"},
                                               "SQ": [{"SN": "c", "LN": len(self.ref)}],
                                               "RG": [{"ID": "g", "SM": "handmade"}]})
        bam = str(self.tmp / "in.bam")
        with pysam.AlignmentFile(bam, "wb", header=hdr) as out:
            for i, (pos, cigar, seq, qual, rev, mapq) in enumerate(self.reads):
                a = pysam.AlignedSegment(hdr)
                a.query_name = f"r{i}"
                a.flag = 16 if rev else 0
                a.reference_id = 0
                a.reference_start = pos
                a.mapping_quality = mapq
                a.cigarstring = cigar
                a.query_sequence = seq
                a.query_qualities = pysam.qualitystring_to_array(chr(33 + qual) * len(seq)) if isinstance(qual, int) \
                    else pysam.qualitystring_to_array("".join(chr(33 + q) for q in qual))
                a.set_tag("RG", "g")
                out.write(a)
        out = self.tmp / "out.vcf.gz"
        r = cli(fa, bam, "-o", out, "-q", *extra)
        assert r.returncode == 0, r.stderr
        return sites(out)


def test_het_snp_at_low_depth(tmp_path):
    p = Pileup(tmp_path)
    alt = "A" if p.ref[1000] != "A" else "C"
    for i in range(6):
        start = 930 + 10 * i
        seq = list(p.window(start, start + 100))
        if i % 2:
            seq[1000 - start] = alt
        p.read(start, "100M", "".join(seq), rev=bool(i % 3))
    got = p.call()
    rec = got[("c", 1001, p.ref[1000], alt)]
    assert rec[0] == "PASS" and rec[1] == "0/1"
    assert len(got) == 1


def test_low_base_qualities_are_not_evidence(tmp_path):
    p = Pileup(tmp_path)
    alt = "A" if p.ref[1000] != "A" else "C"
    for i in range(8):
        start = 930 + 8 * i
        seq = list(p.window(start, start + 100))
        qual = [35] * 100
        if i % 2:
            seq[1000 - start] = alt
            qual[1000 - start] = 3          # every alt base is a Q3 base
        p.read(start, "100M", "".join(seq), qual=qual)
    got = p.call()
    assert not [k for k, v in got.items() if v[0] == "PASS"]


def test_hom_deletion_in_homopolymer_is_one_left_aligned_record(tmp_path):
    p = Pileup(tmp_path)
    p.set_ref(1000, "GAAAAAAC")                      # A run at 1001..1006
    hap = p.ref[:1001] + p.ref[1002:]                # one A fewer
    for i in range(10):
        start = 940 + 5 * i
        seq = "".join(hap[start:start + 100])
        gap = 1001 + (i % 6)                          # reads place the gap anywhere in the run
        left = gap - start
        p.read(start, f"{left}M1D{100 - left}M", seq, rev=bool(i % 2))
    got = p.call()
    assert got == {("c", 1001, "GA", "G"): got[("c", 1001, "GA", "G")]}
    assert got[("c", 1001, "GA", "G")][:2] == ("PASS", "1/1")


def test_two_alleles_at_one_site(tmp_path):
    p = Pileup(tmp_path)
    h1 = p.ref[:1001] + p.ref[1003:]                  # 2 bp deletion after 1000
    h2 = p.ref[:1001] + p.ref[1005:]                  # 4 bp deletion after 1000
    for i in range(16):
        start = 930 + 6 * i
        hap, d = (h1, 2) if i % 2 else (h2, 4)
        seq = "".join(hap[start:start + 100])
        left = 1001 - start
        p.read(start, f"{left}M{d}D{100 - left}M", seq, rev=bool(i % 3 == 0))
    got = p.call()
    key = ("c", 1001, "".join(p.ref[1000:1005]), f"{p.ref[1000]}{''.join(p.ref[1003:1005])},{p.ref[1000]}")
    assert key in got, got
    assert got[key][:2] == ("PASS", "1/2")


def test_insertion_hidden_in_soft_clips(tmp_path):
    p = Pileup(tmp_path)
    ins = "GATTACAGATTACAGATTAC"                       # 20 bp after ref[1000]
    hap = p.ref[:1001] + list(ins) + p.ref[1001:]
    for i in range(12):
        start = 905 + 8 * i
        seq = "".join(hap[start:start + 120])
        left = 1001 - start
        if left >= 60:                                 # the aligner clipped the insertion and what follows
            p.read(start, f"{left}M{120 - left}S", seq)
        else:                                          # ... or the part before it (and the insertion)
            p.read(1001, f"{left + 20}S{100 - left}M", seq)
    got = p.call()
    key = ("c", 1001, p.ref[1000], p.ref[1000] + ins)
    assert key in got, got
    assert got[key][:2] == ("PASS", "1/1")


# ------------------------------------------------------------------ the shipped sample, sharded

@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny, tiny_bam):
    out = tmp_path_factory.mktemp("whole") / "whole.vcf.gz"
    r = cli(tiny["ref"], tiny_bam, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    return out


def test_vcf_is_valid_indexed_and_named(whole, tiny):
    with pysam.VariantFile(str(whole)) as v:
        assert list(v.header.samples) == ["chr20sim"]
        assert [c for c in v.header.contigs] == ["chr20_10000001_12000000", "chr20_34000001_35500000",
                                                  "chr20_60000001_60500000"]
        recs = list(v.fetch("chr20_34000001_35500000", 100000, 600000))
        assert recs and all(100000 <= r.start < 600000 for r in recs)
        r = recs[0]
        assert set(r.format.keys()) == {"GT", "GQ", "DP", "AD", "PL"}
    # nothing in the 50 kb N gap of the second contig (its position from the reference)
    fa = pysam.FastaFile(tiny["ref"])
    s = fa.fetch("chr20_34000001_35500000")
    gap = s.index("N" * 1000)
    assert not [ln for ln in records(whole) if ln.startswith("chr20_34000001_35500000\t")
                and gap <= int(ln.split("\t")[1]) <= gap + 50000]


@pytest.mark.parametrize("n", [7, 50])
def test_regions_give_the_same_records(tmp_path, tiny, tiny_bam, whole, n):
    out = tmp_path / f"r{n}.vcf.gz"
    r = cli(tiny["ref"], tiny_bam, "-o", out, "-q", "--regions", n)
    assert r.returncode == 0, r.stderr
    assert records(out) == records(whole)


def test_random_edges_inside_indels_clusters_and_reads(tiny, tiny_bam, whole):
    """Region edges on purpose inside indels, between variants of a dense cluster, inside reads:
    the concatenated region calls are the whole-genome calls."""
    from kernels import call, qualcal
    from kernels.caller import Caller
    from kernels.reference import open_reference
    from kernels.regions import Interval
    ref = open_reference(tiny["ref"])            # bgzip + .fai: bases fetched around each window
    assert ref.how == "faidx"
    hdr, reads, _, _ = call.load_bams(ref, tiny["ref"], [tiny_bam])
    caller = Caller(ref, reads, qualcal.table(*call.count_qualities(ref, reads), call.MAX_BQ))
    want = records(whole)
    rng = random.Random(7)
    by_contig = {}
    for ln in want:
        f = ln.split("\t")
        by_contig.setdefault(f[0], []).append((int(f[1]) - 1, len(f[3])))
    for trial in range(3):
        got = []
        for name, ln in zip(ref.names, ref.lengths):
            vs = by_contig.get(name, [])
            cuts = set()
            for pos, reflen in rng.sample(vs, min(8, len(vs))):
                cuts.add(pos + rng.randint(0, max(1, reflen)))   # at, inside or just after a variant
            # between two close variants, if any
            close = [(a, b) for (a, _), (b, _) in zip(vs, vs[1:]) if 0 < b - a < 40]
            for a, b in close[:3]:
                cuts.add((a + b) // 2)
            cuts |= {rng.randint(1, int(ln) - 1) for _ in range(3)}  # anywhere (inside reads)
            edges = [0] + sorted(c for c in cuts if 0 < c < ln) + [int(ln)]
            for a, b in zip(edges, edges[1:]):
                lines, _ = caller.interval(Interval(name, a, b))
                got += [x + "\n" for x in lines]
        assert got == want, trial


def test_region_flag_and_bam_out(tmp_path, tiny, tiny_bam, whole):
    out = tmp_path / "r.vcf.gz"
    bam = tmp_path / "r.bam"
    r = cli(tiny["ref"], tiny_bam, "-o", out, "-q", "--region", "chr20_34000001_35500000:200001-700000",
            "--bam-out", bam, "--json")
    assert r.returncode == 0, r.stderr
    want = [ln for ln in records(whole) if ln.startswith("chr20_34000001_35500000\t")
            and 200001 <= int(ln.split("\t")[1]) <= 700000]
    assert records(out) == want and want
    # the summary reaches a pipe whole: the process ends with os._exit (errors.end_now) after flushing
    assert json.loads(r.stdout)["variants"] == len(want)
    assert subprocess.run(["samtools", "quickcheck", bam]).returncode == 0
    with pysam.AlignmentFile(str(bam)) as f:
        assert f.header.to_dict()["HD"]["SO"] == "coordinate"
        pos = [(x.reference_id, x.reference_start) for x in f]
        assert pos == sorted(pos) and all(200000 <= p < 700000 for _, p in pos)
        assert len(list(f.fetch("chr20_34000001_35500000", 300000, 300100))) > 0   # the .bai works


def test_duplicates_and_parts_sharding(tmp_path, tiny, tiny_index):
    """A sample with duplicate pairs, aligned into region parts: each region called from its part
    and its neighbours' (with the aligner's quality counts of the whole sample) gives the records
    of the whole sample called at once, and the same duplicate flags."""
    # duplicate 800 pairs under new names (different qualities: the best copy must win)
    def load(p):
        with gzip.open(p, "rt") as f:
            lines = f.read().splitlines()
        return [lines[i:i + 4] for i in range(0, len(lines), 4)]
    r1, r2 = load(tiny["r1"]), load(tiny["r2"])
    for src in (r1, r2):
        extra = []
        for i in range(0, 1600, 2):
            name, seq, plus, qual = src[i]
            extra.append([name.split("/")[0] + f"dup/{name[-1]}", seq, plus, qual[::-1]])
        src += extra
    for path, recs in ((tmp_path / "d_1.fq", r1), (tmp_path / "d_2.fq", r2)):
        path.write_text("\n".join("\n".join(r) for r in recs) + "\n")
    bed = tmp_path / "regions.bed"
    regions = [("chr20_10000001_12000000", 0, 650000), ("chr20_10000001_12000000", 650000, 1400000),
               ("chr20_10000001_12000000", 1400000, 2000000), ("chr20_34000001_35500000", 0, 1500000),
               ("chr20_60000001_60500000", 0, 500000)]
    bed.write_text("".join(f"{c}\t{a}\t{b}\n" for c, a, b in regions))
    r = cli(tiny_index, tmp_path / "d_1.fq", tmp_path / "d_2.fq", "--regions", bed, "--parts", tmp_path / "p.bam",
            "-q", "-R", r"@RG\tID:d\tSM:dups\tLB:lib1", "--qual-counts", tmp_path / "q.json", module="kernels.align")
    assert r.returncode == 0, r.stderr
    # the part file is a BAM: called whole as one
    r = cli(tiny["ref"], tmp_path / "p.bam", "-o", tmp_path / "whole.vcf.gz", "--bam-out", tmp_path / "whole.bam", "-q")
    assert r.returncode == 0, r.stderr
    got, dups = [], {}
    for i in range(len(regions)):
        out = tmp_path / f"reg{i}.vcf.gz"
        r = cli(tiny["ref"], "--parts", tmp_path / "p.bam", "--regions-bed", bed, "--only", i, "-o", out,
                "--bam-out", tmp_path / f"reg{i}.bam", "--json", "--qual-counts", tmp_path / "q.json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        c, a, b = regions[i]
        with pysam.AlignmentFile(str(tmp_path / "p.bam")) as f:
            in_region = sum(1 for x in f if x.reference_name == c and a <= x.reference_start < b)
        # it read its region's records and, of its neighbours on the contig, at most their edges
        assert in_region <= res["records"] <= in_region + 2 * 100000 * 40000 // 4000000
        got += records(out)
        with pysam.AlignmentFile(str(tmp_path / f"reg{i}.bam")) as f:
            for x in f:
                dups[(x.query_name, x.flag & 0xC0)] = x.is_duplicate
    assert got == records(tmp_path / "whole.vcf.gz")
    with pysam.AlignmentFile(str(tmp_path / "whole.bam")) as f:
        whole_dups = {(x.query_name, x.flag & 0xC0): x.is_duplicate for x in f if not x.is_unmapped}
    assert sum(whole_dups.values()) > 1400          # the copies (and a few natural duplicates)
    assert {k: v for k, v in dups.items() if k in whole_dups} == whole_dups
    # the kept copy of each duplicated pair is the one with the better qualities (original order)
    assert not whole_dups[("tiny.1", 64)] and whole_dups[("tiny.1dup", 64)]


@pytest.mark.mpi
def test_mpi_ranks_take_regions(tmp_path, tiny, tiny_bam, whole):
    mpiexec = venv_bin("mpiexec")
    need(os.path.exists(mpiexec), "mpiexec of the mpich wheel (pip install mpich)")
    out = tmp_path / "m.vcf.gz"
    r = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "kernels.call", tiny["ref"], tiny_bam, "-o", out,
                        "--regions", "5", "-q"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert records(out) == records(whole)


# ------------------------------------------------------------------ bad input

def test_bad_input(tmp_path, tiny, tiny_bam):
    out = tmp_path / "o.vcf.gz"
    cases = []
    # a region string that is not one, a region outside the contigs
    cases.append(((tiny["ref"], tiny_bam, "-o", out, "--region", "chr20_34000001_35500000:x-5"), "not a region"))
    cases.append(((tiny["ref"], tiny_bam, "-o", out, "--region", "chr20_60000001_60500000:400000-600000"),
                  "outside contig"))
    cases.append(((tiny["ref"], tiny_bam, "-o", out, "--region", "chrZ:1-100"), "'chrZ' is not in the reference"))
    # a missing file, a file that is not a BAM
    cases.append(((tiny["ref"], tmp_path / "none.bam", "-o", out), "no such BAM file"))
    (tmp_path / "text.bam").write_text("not a bam\n")
    cases.append(((tiny["ref"], tmp_path / "text.bam", "-o", out), "not a readable BAM"))
    # a BAM whose @SQ names or lengths disagree with the reference
    other = tmp_path / "other.fa"
    other.write_text(">chr20_10000001_12000000\nACGT\n>x\nAC\n>y\nA\n")
    cases.append(((other, tiny_bam, "-o", out), "aligned to another reference"))
    # unsorted input where sorted is required: a header that says SO:coordinate over unsorted records
    lie = tmp_path / "lie.bam"
    with pysam.AlignmentFile(tiny_bam) as f:
        h = f.header.to_dict()
        h["HD"]["SO"] = "coordinate"
        with pysam.AlignmentFile(str(lie), "wb", header=h) as o:
            for i, x in enumerate(f):
                if i > 2000:
                    break
                o.write(x)
    cases.append(((tiny["ref"], lie, "-o", out), "unsorted input where sorted is required"))
    for args, needle in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (needle, r.stderr)
        assert not [p for p in os.listdir(tmp_path) if p.startswith("o.vcf")]


@pytest.mark.mpi
def test_mpi_ranks_on_parts(tmp_path, tiny, tiny_index):
    """--parts: a sample aligned in two chunks, two part files; ranks take blocks of regions and
    read only their groups and their neighbours' edges: the same records as the part files called
    whole; with flanks of 0 a window always reaches past the edges loaded, and the rank reads its
    contigs' groups whole instead."""
    mpiexec = venv_bin("mpiexec")
    need(os.path.exists(mpiexec), "mpiexec of the mpich wheel (pip install mpich)")
    bed = tmp_path / "r.bed"
    bed.write_text("chr20_10000001_12000000\t0\t800000\nchr20_10000001_12000000\t800000\t2000000\n"
                   "chr20_34000001_35500000\t0\t900000\nchr20_34000001_35500000\t900000\t1500000\n"
                   "chr20_60000001_60500000\t0\t500000\n")
    r = cli(tiny["r1"], tiny["r2"], "--pairs", 12000, "-o", tmp_path / "s", module="kernels.split")
    assert r.returncode == 0, r.stderr
    for flank in (100000, 0):
        for c in range(2):
            r = cli(tiny_index, tmp_path / f"s.c{c:04d}_R1.fastq.gz", tmp_path / f"s.c{c:04d}_R2.fastq.gz",
                    "--regions", bed, "--parts", tmp_path / f"f{flank}.c{c}.bam", "--flank", flank, "-q",
                    "-R", rf"@RG\tID:tiny{c}\tSM:chr20sim\tLB:one", module="kernels.align")
            assert r.returncode == 0, r.stderr
    parts = [str(tmp_path / f"f100000.c{c}.bam") for c in range(2)]
    r = cli(tiny["ref"], *parts, "-o", tmp_path / "whole.vcf.gz", "-q")
    assert r.returncode == 0, r.stderr
    whole = records(tmp_path / "whole.vcf.gz")
    assert len(whole) > 1000
    (tmp_path / "list.txt").write_text("\n".join(str(tmp_path / f"f0.c{c}.bam") for c in range(2)) + "\n")
    for ranks, flank in ((1, 100000), (3, 100000), (3, 0)):
        out = tmp_path / f"n{ranks}.{flank}.vcf.gz"
        plist = parts if flank else ["@" + str(tmp_path / "list.txt")]
        cmd = [sys.executable, "-m", "kernels.call", tiny["ref"], "--parts", *plist, "--regions-bed",
               str(bed), "-o", str(out), "-q", "--bam-out", str(tmp_path / f"n{ranks}.{flank}.bam")]
        r = subprocess.run(([mpiexec, "-n", str(ranks)] if ranks > 1 else []) + cmd, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr
        assert ("reading the whole contigs' groups" in r.stderr) == (flank == 0), r.stderr
        assert records(out) == whole, (ranks, flank)
    a = subprocess.run(["samtools", "view", str(tmp_path / "n1.100000.bam")], capture_output=True, text=True).stdout
    b = subprocess.run(["samtools", "view", str(tmp_path / "n3.100000.bam")], capture_output=True, text=True).stdout
    assert a == b and a.count("\n") == 40000


def test_blocks_balanced_by_part_size():
    """Ranks' blocks of regions: contiguous, covering, none empty, the heaviest as light as a cut
    between items allows."""
    from kernels.call import balanced_blocks
    assert balanced_blocks([45, 45, 45, 31, 22, 45, 45, 43], 2) == [(0, 4), (4, 8)]
    assert sorted(hi - lo for lo, hi in balanced_blocks([1, 1, 1], 5)) == [0, 0, 1, 1, 1]   # more ranks than regions
    assert balanced_blocks([0, 0, 0, 0], 2) == [(0, 2), (2, 4)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=40), st.integers(1, 8))
def test_blocks_property(weights, k):
    from kernels.call import balanced_blocks
    b = balanced_blocks(weights, k)
    assert len(b) == k and b[0][0] == 0 and b[-1][1] == len(weights)
    assert all(b[j][1] == b[j + 1][0] and b[j][0] <= b[j][1] for j in range(k - 1))
    if len(weights) >= k:
        assert all(hi > lo for lo, hi in b)
    if k == 2 and len(weights) >= 2:
        # two blocks: no other cut has a lighter heavier block
        best = min(max(sum(weights[:c]), sum(weights[c:])) for c in range(1, len(weights)))
        assert max(sum(weights[lo:hi]) for lo, hi in b) == best


def test_block_groups_read_neighbours_near_the_edges():
    from kernels.partfile import block_groups, loaded_span
    reg = [("a", 0, 1000), ("a", 1000, 5000), ("a", 5000, 9000), ("b", 0, 3000), ("b", 3000, 4000)]
    # block 1..2 of contig a: region 0's tail; the next region is on b
    assert block_groups(reg, 1, 3, 300) == [2, 3, 4, 5, 6, 7, 8]
    assert loaded_span(reg, 1, 3, 300) == {"a": [700, 9000]}
    # region 0 is shorter than two flanks: its tail holds less than a flank, so it is read whole
    assert block_groups(reg, 1, 3, 600) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert loaded_span(reg, 1, 3, 600) == {"a": [0, 9000]}
    assert block_groups(reg, 2, 3, 300) == [5, 6, 7, 8]                 # region 1's tail: [4700, 5000)
    assert loaded_span(reg, 2, 3, 300) == {"a": [4700, 9000]}
    assert block_groups(reg, 2, 4, 5000) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert loaded_span(reg, 2, 4, 5000) == {"a": [1000, 9000], "b": [0, 4000]}
    assert block_groups(reg, 2, 2, 300) == []
    assert block_groups(reg, 3, 4, 300, whole_contigs=True) == [9, 10, 11, 12, 13, 14]
