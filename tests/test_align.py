"""The aligner end to end on the shipped sample and on a made-up genome with a repeat."""
import gzip
import os
import subprocess
import sys

import numpy as np
import pysam
import pytest

from conftest import need, need_tool, venv_bin
from kernels.scoring import CLIP, GAP_EXT, GAP_OPEN, MATCH, MISMATCH, N_PEN, params

P = params()


def records(path):
    with pysam.AlignmentFile(path) as f:
        return list(f)


def sam_lines(path):
    return subprocess.run(["samtools", "view", path], capture_output=True, text=True, check=True).stdout


def truth_positions(path):
    t = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            if not line.startswith("#"):
                c = line.split("\t")
                t[(c[0], int(c[1]))] = (c[2], int(c[3]), int(c[4]))
    return t


def test_tiny_accuracy_against_truth(tiny, tiny_bam):
    truth = truth_positions(tiny["truth_tsv"])
    n = correct = hq = hq_wrong = 0
    for r in records(tiny_bam):
        n += 1
        t = truth[(r.query_name, 2 if r.is_read2 else 1)]
        if r.is_unmapped:
            continue
        cig = r.cigartuples
        lc = cig[0][1] if cig[0][0] == 4 else 0
        rc = cig[-1][1] if cig[-1][0] == 4 else 0
        ok = r.reference_name == t[0] and (abs(r.reference_start + 1 - lc - t[1]) <= 10 or
                                           abs(r.reference_end + rc - t[2]) <= 10)
        correct += ok
        if r.mapping_quality >= 20:
            hq += 1
            hq_wrong += not ok
    assert n == 40000
    # bwa mem 0.7.17 on this sample: 99.99% placed within 10 bp, none wrong at MAPQ >= 20
    assert correct / n >= 0.999
    assert hq / n >= 0.998
    assert hq_wrong <= 2


def test_records_are_complete_and_consistent(tiny, tiny_bam):
    """CIGAR consumes the read, AS = score recomputed from CIGAR + reference, flags and mate fields agree."""
    fa = pysam.FastaFile(tiny["ref"])
    ref = {c: fa.fetch(c).upper() for c in fa.references}
    recs = records(tiny_bam)
    by_name = {}
    for r in recs:
        by_name.setdefault(r.query_name, []).append(r)
    checked = 0
    for r in recs[:6000]:
        assert r.is_paired and (r.is_read1 != r.is_read2)
        assert r.get_tag("RG") == "tiny"
        if r.is_unmapped:
            assert r.mapping_quality == 0 and not r.cigartuples
            continue
        cig = r.cigartuples
        assert sum(n for op, n in cig if op in (0, 1, 4)) == r.query_length
        # score from CIGAR + reference, written independently of the kernels
        s, qi, ri = 0, 0, r.reference_start
        q = r.query_sequence
        rs = ref[r.reference_name]
        for op, n in cig:
            if op == 4:
                s -= P[CLIP]
                qi += n
            elif op == 0:
                for t in range(n):
                    a, b = q[qi + t], rs[ri + t]
                    s += -P[N_PEN] if "N" in (a, b) else (P[MATCH] if a == b else -P[MISMATCH])
                qi += n
                ri += n
            elif op in (1, 2):
                s -= P[GAP_OPEN] + n * P[GAP_EXT]
                qi += n if op == 1 else 0
                ri += n if op == 2 else 0
        assert s == r.get_tag("AS"), (r.query_name, r.cigarstring)
        assert r.get_tag("XS") <= r.get_tag("AS") or r.mapping_quality == 0
        mate = [m for m in by_name[r.query_name] if m is not r][0]
        assert r.mate_is_unmapped == mate.is_unmapped
        if not mate.is_unmapped:
            assert (r.next_reference_id, r.next_reference_start) == (mate.reference_id, mate.reference_start)
            assert r.mate_is_reverse == mate.is_reverse
            assert r.get_tag("MC") == mate.cigarstring
            if r.is_proper_pair:
                assert r.template_length == -mate.template_length != 0
        checked += 1
    assert checked > 5000


def test_md_nm_agree_with_samtools_calmd(tiny, tiny_bam, tmp_path):
    """samtools recomputes MD/NM from the reference and reports any record that differs."""
    need_tool("samtools")
    ref = tmp_path / "ref.fa"
    with gzip.open(tiny["ref"], "rb") as f:
        ref.write_bytes(f.read())
    # calmd reloads a contig whenever it changes: give it sorted input
    srt = tmp_path / "sorted.bam"
    subprocess.run(["samtools", "sort", "-o", str(srt), tiny_bam], check=True, capture_output=True)
    r = subprocess.run(["samtools", "calmd", str(srt), str(ref)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "different" not in r.stderr, r.stderr[:2000]
    assert r.stdout.count("\tMD:Z:") > 39000


def test_samtools_quickcheck(tiny_bam):
    need_tool("samtools")
    assert subprocess.run(["samtools", "quickcheck", "-vvv", tiny_bam]).returncode == 0


@pytest.mark.picard
def test_picard_validate_sam_file(tiny_bam):
    picard = need_tool("PicardCommandLine")
    r = subprocess.run([picard, "ValidateSamFile", f"I={tiny_bam}", "MODE=SUMMARY"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No errors found" in r.stdout + r.stderr


def test_no_temporary_files_left(tiny_bam):
    d = os.path.dirname(tiny_bam)
    assert os.listdir(d) == ["tiny.bam"]


def test_threads_do_not_change_the_output(tmp_path, tiny, tiny_index, tiny_bam):
    out = tmp_path / "t1.bam"
    subprocess.run([sys.executable, "-m", "kernels.align", tiny_index, tiny["r1"], tiny["r2"], "-o", out, "-t", "1",
                    "-R", r"@RG\tID:tiny\tSM:chr20sim\tPL:ILLUMINA", "-q"], check=True)
    assert sam_lines(str(out)) == sam_lines(tiny_bam)


@pytest.mark.mpi
def test_mpi_ranks_give_the_same_records(tmp_path, tiny, tiny_index):
    mpiexec = venv_bin("mpiexec")
    need(os.path.exists(mpiexec), "mpiexec of the mpich wheel (pip install mpich)")
    outs = {}
    for ranks in (1, 3):
        out = tmp_path / f"r{ranks}.bam"
        cmd = [sys.executable, "-m", "kernels.align", tiny_index, tiny["r1"], tiny["r2"], "-o", str(out),
               "--batch", "2500", "-q"]
        if ranks > 1:
            cmd = [mpiexec, "-n", str(ranks)] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        outs[ranks] = sam_lines(str(out))
    assert outs[1].count("\n") == 40000
    # the same records in the same order (the @PG command line differs, the records do not)
    assert outs[1] == outs[3]
    assert not list(tmp_path.glob("*.parts.tmp"))


# ------------------------------------------------------------------ repeats and MAPQ

def simulate_pairs(genome, starts, rng, L=100, frag=300):
    comp = str.maketrans("ACGT", "TGCA")
    r1, r2 = [], []
    for i, s in enumerate(starts):
        f = genome[s:s + frag]
        a, b = f[:L], f[-L:].translate(comp)[::-1]
        r1.append(f"@p{i}\n{a}\n+\n{'I' * L}\n")
        r2.append(f"@p{i}\n{b}\n+\n{'I' * L}\n")
    return "".join(r1), "".join(r2)


def test_repeats_get_low_mapq_and_unique_reads_high(tmp_path):
    rng = np.random.default_rng(11)
    rand = lambda n: "".join("ACGT"[x] for x in rng.integers(0, 4, n))  # noqa: E731
    copy = rand(3000)
    genome = rand(20000) + copy + rand(20000) + copy + rand(20000)
    (tmp_path / "g.fa").write_text(">g\n" + genome + "\n")
    # pairs wholly inside the repeat copies, and pairs in unique sequence
    rep_starts = list(rng.integers(20000, 20000 + 3000 - 300, 60))
    uni_starts = list(rng.integers(0, 20000 - 300, 500)) + list(rng.integers(23000, 43000 - 300, 500))
    a, b = simulate_pairs(genome, rep_starts + uni_starts, rng)
    (tmp_path / "r1.fq").write_text(a)
    (tmp_path / "r2.fq").write_text(b)
    subprocess.run([sys.executable, "-m", "kernels.index", tmp_path / "g.fa", tmp_path / "g"], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "kernels.align", tmp_path / "g", tmp_path / "r1.fq", tmp_path / "r2.fq",
                    "-o", tmp_path / "o.bam", "-q"], check=True)
    rep_mq, uni_mq = [], []
    for r in records(str(tmp_path / "o.bam")):
        i = int(r.query_name[1:])
        assert not r.is_unmapped
        if i < len(rep_starts):
            rep_mq.append(r.mapping_quality)
            assert r.get_tag("XS") == r.get_tag("AS")       # the other copy was found and scored
        else:
            uni_mq.append(r.mapping_quality)
    assert max(rep_mq) <= 3
    assert min(uni_mq) >= 50


@pytest.mark.mpi
def test_mpi_bad_record_stops_every_rank(tmp_path, tiny_index):
    mpiexec = venv_bin("mpiexec")
    need(os.path.exists(mpiexec), "mpiexec of the mpich wheel (pip install mpich)")
    rec = lambda i, name: f"@{name}\n{'ACGT' * 25}\n+\n{'I' * 100}\n"  # noqa: E731
    (tmp_path / "r1.fq").write_text("".join(rec(i, f"r{i}") for i in range(400)))
    # a name mismatch in batch 3 (pairs 300-399), which rank 1 owns
    (tmp_path / "r2.fq").write_text("".join(rec(i, f"r{i}" if i != 350 else "zz") for i in range(400)))
    out = tmp_path / "o.bam"
    r = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "kernels.align", tiny_index, tmp_path / "r1.fq",
                        tmp_path / "r2.fq", "-o", out, "--batch", "100", "-q"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "read 351: names differ" in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["r1.fq", "r2.fq"]
