"""kernels.split (chunks of a FASTQ pair) and kernels.align --regions/--parts (one BAM per region)."""
import json
import os
import subprocess
import sys

import pysam
import pytest

from conftest import need, venv_bin
from kernels.fastq import read_pairs_slow


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


def test_parts_partition_the_reads(tmp_path, tiny, tiny_index, tiny_bam, regions_bed):
    r = cli("kernels.align", tiny_index, tiny["r1"], tiny["r2"], "--regions", regions_bed, "--parts",
            tmp_path / "p", "--json", "-q", "-R", r"@RG\tID:tiny\tSM:chr20sim\tPL:ILLUMINA")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    bounds = [("chr20_10000001_12000000", 0, 700000), ("chr20_10000001_12000000", 700000, 2000000),
              ("chr20_34000001_35500000", 0, 1500000), ("chr20_60000001_60500000", 0, 500000)]
    seen = []
    for part, (chrom, s, e) in zip(res["parts"], bounds):
        with pysam.AlignmentFile(part["bam"]) as f:
            recs = list(f)
        assert len(recs) == part["reads"]
        for x in recs:
            assert x.reference_name == chrom and s <= x.reference_start < e
        seen += [x.to_string() for x in recs]
    with pysam.AlignmentFile(res["unmapped"]["bam"]) as f:
        seen += [x.to_string() for x in f]
    with pysam.AlignmentFile(tiny_bam) as f:
        whole = [x.to_string() for x in f]
    # the parts hold exactly the records of the single BAM (the @PG line aside, which is header)
    assert sorted(seen) == sorted(whole)
    assert sorted(os.listdir(tmp_path)) == sorted(["p.r0000.bam", "p.r0001.bam", "p.r0002.bam", "p.r0003.bam",
                                                   "p.unmapped.bam"])


@pytest.mark.mpi
def test_parts_with_ranks(tmp_path, tiny, tiny_index, regions_bed):
    mpiexec = venv_bin("mpiexec")
    need(os.path.exists(mpiexec), "mpiexec of the mpich wheel (pip install mpich)")
    outs = {}
    for ranks in (1, 2):
        cmd = [sys.executable, "-m", "kernels.align", tiny_index, tiny["r1"], tiny["r2"], "--regions", regions_bed,
               "--parts", str(tmp_path / f"n{ranks}"), "--batch", "3000", "-q"]
        r = subprocess.run(([mpiexec, "-n", "2"] if ranks == 2 else []) + cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs[ranks] = {}
        for g in ("r0000", "r0001", "r0002", "r0003", "unmapped"):
            with pysam.AlignmentFile(str(tmp_path / f"n{ranks}.{g}.bam")) as f:
                outs[ranks][g] = sorted(x.to_string() for x in f)
    assert outs[1] == outs[2]
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


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
            tmp_path / "p", "-q")
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["r.bed"]
