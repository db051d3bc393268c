"""kernels.split (chunks of a FASTQ pair) and kernels.align --regions/--parts (one part file, its
records grouped by region: kernels.partfile)."""
import gzip
import json
import os
import subprocess
import sys

import pysam
import pysam.libcbgzf
import pytest

from conftest import need, venv_bin
from kernels.bamread import read_parts
from kernels.fastq import read_pairs_slow
from kernels.partfile import PartFile


def cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)


def test_split_chunks_hold_the_input(tmp_path, tiny):
    r = cli("kernels.split", tiny["r1"], tiny["r2"], "--pairs", 6000, "-o", tmp_path / "s", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [c["pairs"] for c in res["chunks"]] == [6000, 6000, 6000, 2000]
    assert [c["first_pair"] for c in res["chunks"]] == [0, 6000, 12000, 18000]
    got = []
    for c in res["chunks"]:
        got += read_pairs_slow(c["r1"], c["r2"])
    want = read_pairs_slow(tiny["r1"], tiny["r2"])
    assert got == [(n, s1.upper(), q1, s2.upper(), q2) for n, s1, q1, s2, q2 in want]
    assert sorted(os.listdir(tmp_path)) == sorted(f"s.c{i:04d}_R{m}.fastq.gz" for i in range(4) for m in (1, 2))


def test_split_bad_pair_leaves_nothing(tmp_path):
    rec = lambda n: f"@{n}\n{'ACGT' * 10}\n+\n{'I' * 40}\n"  # noqa: E731
    (tmp_path / "a.fq").write_text("".join(rec(f"r{i}") for i in range(100)))
    (tmp_path / "b.fq").write_text("".join(rec(f"r{i}") for i in range(99)))
    r = cli("kernels.split", tmp_path / "a.fq", tmp_path / "b.fq", "--pairs", 30, "-o", tmp_path / "s")
    assert r.returncode == 2 and "must hold the same reads" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.fq", "b.fq"]
    r = cli("kernels.split", tmp_path / "a.fq", tmp_path / "a.fq", "--pairs", 0, "-o", tmp_path / "s")
    assert r.returncode == 2 and "at least one pair" in r.stderr


@pytest.fixture(scope="module")
def regions_bed(tmp_path_factory):
    d = tmp_path_factory.mktemp("bed")
    p = d / "regions.bed"
    p.write_text("chr20_10000001_12000000\t0\t700000\nchr20_10000001_12000000\t700000\t2000000\n"
                 "chr20_34000001_35500000\t0\t1500000\nchr20_60000001_60500000\t0\t500000\n")
    return str(p)


def group_records_of(part, tmp):
    """{group: [SAM text of its records]} of a part file, read without kernels.bamread: each group's
    runs (kernels.partfile's tables) inflated with Python's gzip after the file's header, written as
    a BAM of their own and read by pysam; kernels.bamread.read_parts must find as many records."""
    pf = PartFile(str(part))
    raw = open(part, "rb").read()
    header = gzip.decompress(raw[:int(pf.blocks[:, 0].min())])
    out = {}
    for g in range(len(pf.groups) - 1):
        body = b"".join(gzip.decompress(raw[int(co):int(co + cs)]) for co, cs, _, _ in pf.runs([g]))
        path = str(tmp / f"g{g}.bam")
        with pysam.libcbgzf.BGZFile(path, "wb") as f:
            f.write(header + body)
        with pysam.AlignmentFile(path) as f:
            out[g] = [x.to_string() for x in f]
        os.unlink(path)
        assert read_parts([pf], [g]).n == len(out[g]) == int(pf.runs([g])[:, 3].sum())
    return pf, out


def test_parts_partition_the_reads(tmp_path, tiny, tiny_index, tiny_bam, regions_bed):
    r = cli("kernels.align", tiny_index, tiny["r1"], tiny["r2"], "--regions", regions_bed, "--parts",
            tmp_path / "p.bam", "--json", "-q", "-R", r"@RG\tID:tiny\tSM:chr20sim\tPL:ILLUMINA", "--flank", 50000)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    bounds = [("chr20_10000001_12000000", 0, 700000), ("chr20_10000001_12000000", 700000, 2000000),
              ("chr20_34000001_35500000", 0, 1500000), ("chr20_60000001_60500000", 0, 500000)]
    (tmp_path / "g").mkdir()
    pf, groups = group_records_of(tmp_path / "p.bam", tmp_path / "g")
    assert len(groups) == 13 and pf.meta["flank"] == 50000 and pf.meta["regions"] == 4
    seen = []
    for i, (chrom, s, e) in enumerate(bounds):
        for k, (lo, hi) in enumerate([(s, s + 50000), (s + 50000, e - 50000), (e - 50000, e)]):
            for x in groups[3 * i + k]:
                f = x.split("\t")
                assert f[2] == chrom and lo <= int(f[3]) - 1 < hi, (i, k, x[:80])
        assert sum(len(groups[3 * i + k]) for k in range(3)) == pf.meta["records_per_region"][i]
    for g in groups.values():
        seen += g
    assert groups[12] == [] and pf.meta["unmapped_pairs_records"] == 0 and res["unmapped_pairs_records"] == 0
    with pysam.AlignmentFile(tiny_bam) as f:
        whole = [x.to_string() for x in f]
    # the groups hold exactly the records of the single BAM (the @PG line aside, which is header), and
    # the part file is a BAM samtools reads whole
    assert sorted(seen) == sorted(whole)
    assert subprocess.run(["samtools", "quickcheck", str(tmp_path / "p.bam")]).returncode == 0
    with pysam.AlignmentFile(str(tmp_path / "p.bam")) as f:
        assert sorted(x.to_string() for x in f) == sorted(whole)
    assert sorted(os.listdir(tmp_path)) == ["g", "p.bam", "p.bam.blocks.npy", "p.bam.groups.npy", "p.bam.parts.json"]


def test_more_regions_than_open_files(tmp_path, tiny, tiny_index):
    """3,000 regions under a limit of 256 open files: the aligner keeps one output open."""
    import resource
    lengths = {"chr20_10000001_12000000": 2000000, "chr20_34000001_35500000": 1500000,
               "chr20_60000001_60500000": 500000}
    with open(tmp_path / "many.bed", "w") as f:
        for c, n in lengths.items():
            step = n // 1000
            for a in range(0, n, step):
                f.write(f"{c}\t{a}\t{min(n, a + step)}\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    r = subprocess.run([sys.executable, "-m", "kernels.align", tiny_index, tiny["r1"], tiny["r2"], "--regions",
                        str(tmp_path / "many.bed"), "--parts", str(tmp_path / "m.bam"), "--json", "-q"],
                       capture_output=True, text=True, preexec_fn=limit)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["regions"] == 3000
    pf = PartFile(str(tmp_path / "m.bam"))
    assert pf.meta["groups"] == 9001 and pf.meta["records"] == 40000


@pytest.mark.mpi
def test_parts_with_ranks(tmp_path, tiny, tiny_index, regions_bed):
    mpiexec = venv_bin("mpiexec")
    need(os.path.exists(mpiexec), "mpiexec of the mpich wheel (pip install mpich)")
    outs = {}
    for ranks in (1, 2):
        cmd = [sys.executable, "-m", "kernels.align", tiny_index, tiny["r1"], tiny["r2"], "--regions", regions_bed,
               "--parts", str(tmp_path / f"n{ranks}.bam"), "--batch", "3000", "-q"]
        r = subprocess.run(([mpiexec, "-n", "2"] if ranks == 2 else []) + cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        _, groups = group_records_of(tmp_path / f"n{ranks}.bam", tmp_path)
        outs[ranks] = {g: sorted(v) for g, v in groups.items()}
    assert outs[1] == outs[2]
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p or ".rank" in p]


@pytest.mark.parametrize("bed,needle", [
    ("chr20_10000001_12000000\t0\t700000\n", "do not cover contig"),
    ("chrX\t0\t10\n", "'chrX' is not in the reference"),
    ("chr20_10000001_12000000\t0\t2000001\n", "is not inside the contig"),
    ("chr20_10000001_12000000\t0\t900\nchr20_10000001_12000000\t800\t2000000\n", "without gaps or overlaps"),
    ("chr20_10000001_12000000\tzero\t10\n", "must be integers"),
])
def test_parts_bad_regions(tmp_path, tiny, tiny_index, bed, needle):
    (tmp_path / "r.bed").write_text(bed)
    r = cli("kernels.align", tiny_index, tiny["r1"], tiny["r2"], "--regions", tmp_path / "r.bed", "--parts",
            tmp_path / "p.bam", "-q")
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["r.bed"]
