"""The gather stage (worker.gather): region VCFs and BAMs back into one, with pysam only."""
import os
import subprocess
import sys

import pysam
import pytest

from conftest import ROOT
from master import planner


@pytest.fixture(scope="module")
def regions(tiny_index):
    return planner.plan(planner.contigs_of_index(tiny_index), 5)


def split_vcf(vcf, regions, d):
    out = []
    with pysam.VariantFile(vcf) as f:
        for r in regions:
            p = os.path.join(d, f"{r.name}.vcf.gz")
            with pysam.VariantFile(p, "wz", header=f.header) as w:
                for rec in f.fetch(r.contig, r.start, r.end):
                    if r.start <= rec.start < r.end:          # a variant belongs to the region of its POS
                        w.write(rec)
            out.append(p)
    return out


def split_bam(bam, regions, d):
    srt = os.path.join(d, "sorted.bam")
    pysam.sort("-o", srt, bam)
    pysam.index(srt)
    out = []
    with pysam.AlignmentFile(srt) as f:
        for r in regions:
            p = os.path.join(d, f"{r.name}.bam")
            with pysam.AlignmentFile(p, "wb", template=f) as w:
                for rec in f.fetch(r.contig, r.start, r.end):
                    if r.start <= rec.reference_start < r.end:
                        w.write(rec)
            out.append(p)
    return out


def test_gather_rebuilds_the_whole_vcf_and_bam(tmp_path, tiny, tiny_bam, regions):
    vcfs = split_vcf(tiny["truth_vcf"], regions, str(tmp_path))
    bams = split_bam(tiny_bam, regions, str(tmp_path))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "worker.gather", "-o", str(out), "--name", "tiny", "--json"]
    for v in vcfs:
        argv += ["--vcf", v]
    for b in bams:
        argv += ["--bam", b]
    r = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    with pysam.VariantFile(tiny["truth_vcf"]) as f:
        want = [str(x) for x in f]
    with pysam.VariantFile(str(out / "tiny.vcf.gz")) as f:
        got = [str(x) for x in f]
        assert len(list(f.fetch("chr20_34000001_35500000", 1000, 200000))) > 0      # the .tbi works
    assert got == want and len(want) == 4528
    assert os.path.exists(out / "tiny.vcf.gz.tbi") and os.path.exists(out / "tiny.bam.bai")
    with pysam.AlignmentFile(str(out / "tiny.bam")) as f:
        n = sum(1 for _ in f.fetch(until_eof=True))
        assert f.check_index()
    with pysam.AlignmentFile(tiny_bam) as f:
        placed = sum(1 for x in f if not x.is_unmapped or x.reference_id >= 0)
    assert n == placed
    import json
    qc = json.loads(r.stdout)
    assert qc["variants"] == 4528 and qc["snps"] == 4043 and qc["indels"] == 485
    assert qc["reads"] == n and 0.99 < qc["mapping_rate"] <= 1.0
    assert qc["bam_joined_by"] == "cat"              # in order: concatenated, not recompressed
    assert not [p for p in os.listdir(out) if ".tmp" in p]


def test_gather_merges_bams_given_out_of_order(tmp_path, tiny_bam, regions):
    """BAMs not in genome order cannot be concatenated: indexing finds it and they are merged."""
    from worker.gather import merge_bams
    bams = split_bam(tiny_bam, regions, str(tmp_path))
    out = str(tmp_path / "m.bam")
    assert merge_bams(list(reversed(bams)), out) == "merge"
    with pysam.AlignmentFile(out) as f:
        assert f.check_index()
        keys = [(r.reference_id, r.reference_start) for r in f.fetch(until_eof=True)]
    assert keys == sorted(keys) and len(keys) > 1000
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(b) for b in bams] +
                                                  ["sorted.bam", "sorted.bam.bai", "m.bam", "m.bam.bai"])


def test_gather_refuses_regions_out_of_order(tmp_path, tiny, regions):
    vcfs = split_vcf(tiny["truth_vcf"], regions, str(tmp_path))
    argv = [sys.executable, "-m", "worker.gather", "-o", str(tmp_path / "o"), "--bam", "/dev/null"]
    for v in reversed(vcfs):
        argv += ["--vcf", v]
    r = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2 and "genome order" in r.stderr
    assert os.listdir(tmp_path / "o") == []                          # nothing half-made
