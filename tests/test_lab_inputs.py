"""Inputs labs have: single-end reads, reads of 100-250 bp and mixed lengths, Phred+64, long read
names, several lanes with their read groups, ALT/decoy/HLA contigs, contig names with ':', '*', '|'."""
import gzip
import json
import subprocess
import sys

import numpy as np
import pysam
import pytest

from conftest import need_tool

COMP = str.maketrans("ACGT", "TGCA")


def cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)


def records(path):
    with pysam.AlignmentFile(str(path)) as f:
        return list(f)


def fastq_records(path):
    op = gzip.open if str(path).endswith(".gz") else open
    with op(path, "rt") as f:
        lines = f.read().splitlines()
    return [lines[i:i + 4] for i in range(0, len(lines), 4)]


def write_fastq(path, recs):
    with open(path, "w") as f:
        f.write("".join("\n".join(r) + "\n" for r in recs))


def mutate(seq, rng, rate=0.01):
    s = list(seq)
    for i in np.flatnonzero(rng.random(len(s)) < rate):
        s[i] = "ACGT"[("ACGT".index(s[i]) + int(rng.integers(1, 4))) % 4]
    return "".join(s)


def simulate(genome, n, rng, lens, frag=(300, 500), names=None):
    """Pairs from one contig: (R1 records, R2 records, [(start of the fragment, its end)]), lengths
    drawn from lens (a list), 1% substitutions, qualities 'I' and '5'."""
    r1, r2, truth = [], [], []
    for i in range(n):
        la, lb = int(rng.choice(lens)), int(rng.choice(lens))
        fl = int(rng.integers(max(frag[0], la, lb) + 1, frag[1]))
        s = int(rng.integers(0, len(genome) - fl))
        f = genome[s:s + fl]
        a = mutate(f[:la], rng)
        b = mutate(f[-lb:].translate(COMP)[::-1], rng)
        name = names(i) if names else f"p{i}"
        qa = "".join(rng.choice(list("I5"), la))
        qb = "".join(rng.choice(list("I5"), lb))
        r1.append([f"@{name}/1", a, "+", qa])
        r2.append([f"@{name}/2", b, "+", qb])
        truth.append((s, s + fl))
    return r1, r2, truth


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    """A made-up genome: chrA (60 kb), an ALT copy of chrA:20000-32000 named as
    GRCh38 names ALTs (0.1% diverged), a decoy, an HLA allele of chrA:40000-43000, and a contig whose name holds
    '|' and ':'; indexed with and without the ALT table."""
    d = tmp_path_factory.mktemp("genome")
    rng = np.random.default_rng(2024)
    rand = lambda n: "".join("ACGT"[x] for x in rng.integers(0, 4, n))  # noqa: E731
    chrA = rand(60000)
    alt = mutate(chrA[20000:32000], rng, 0.001)
    hla = mutate(chrA[40000:43000], rng, 0.01)
    contigs = {"chrA": chrA, "chrA_KI270001v1_alt": alt, "chrUn_JTFH01000001v1_decoy": rand(8000),
               "HLA-A*01:01:01:01": hla, "chrB|x:1": rand(15000)}
    (d / "g.fa").write_text("".join(f">{n}\n" + "\n".join(s[i:i + 70] for i in range(0, len(s), 70)) + "\n"
                                    for n, s in contigs.items()))
    (d / "alt.tsv").write_text("#alt\tprimary\tstart0\tend\nchrA_KI270001v1_alt\tchrA\t20000\t32000\n")
    pysam.faidx(str(d / "g.fa"))
    r = cli("kernels.index", d / "g.fa", d / "alt", "--alt", d / "alt.tsv", "-q")
    assert r.returncode == 0, r.stderr
    # the same sequences with the ALT copy under a primary name: nothing tells the aligner it is an ALT
    (d / "plain.fa").write_text((d / "g.fa").read_text().replace(">chrA_KI270001v1_alt", ">chrA2")
                                .replace(">HLA-A*01:01:01:01", ">chrH"))
    r = cli("kernels.index", d / "plain.fa", d / "plain", "-q")
    assert r.returncode == 0, r.stderr
    return {"dir": d, "fa": d / "g.fa", "alt": str(d / "alt"), "plain": str(d / "plain"), "seq": contigs}


def placed(rec, truth_span, contig="chrA"):
    s, e = truth_span
    return rec.reference_name == contig and (abs(rec.reference_start - s) <= 10 or abs(rec.reference_end - e) <= 10)


# ------------------------------------------------------------------ ALT, decoy, HLA

def test_alt_copies_keep_a_meaningful_mapq_on_the_primary_assembly(tmp_path, genome):
    rng = np.random.default_rng(1)
    region = genome["seq"]["chrA"][20000:32000]
    r1, r2, truth = simulate(region, 300, rng, [150])
    write_fastq(tmp_path / "a1.fq", r1)
    write_fastq(tmp_path / "a2.fq", r2)
    out = {}
    for name in ("alt", "plain"):
        r = cli("kernels.align", genome[name], tmp_path / "a1.fq", tmp_path / "a2.fq", "-o", tmp_path / f"{name}.bam",
                "-q")
        assert r.returncode == 0, r.stderr
        out[name] = records(tmp_path / f"{name}.bam")
    # ALT-aware: every read on the primary assembly where it came from, with a high MAPQ; its XS
    # (the best other hit) leaves out the ALT copy
    ok = [placed(x, (truth[int(x.query_name[1:])][0] + 20000, truth[int(x.query_name[1:])][1] + 20000))
          for x in out["alt"] if x.is_read1]
    assert sum(ok) >= 0.99 * len(ok)
    mq = np.array([x.mapping_quality for x in out["alt"]])
    assert np.mean(mq >= 20) >= 0.95, np.bincount(mq)
    # without it the copy is a second locus as good as the first: MAPQ near 0 for most of the reads
    mq_plain = np.array([x.mapping_quality for x in out["plain"]])
    assert np.mean(mq_plain >= 20) < 0.5 and np.mean(mq_plain) < np.mean(mq) - 20
    assert any(x.reference_name == "chrA2" for x in out["plain"])


def test_reads_of_alt_or_hla_only_sequence_stay_there_and_decoys_absorb_theirs(tmp_path, genome):
    rng = np.random.default_rng(3)
    # the decoy's own sequence (not in chrA), with 20 homozygous SNPs: placed on the decoy, where
    # calling does not happen unless asked for
    decoy = list(genome["seq"]["chrUn_JTFH01000001v1_decoy"])
    for i in range(200, 7800, 380):
        decoy[i] = "ACGT"[("ACGT".index(decoy[i]) + 1) % 4]
    r1, r2, _ = simulate("".join(decoy), 1200, rng, [150])
    write_fastq(tmp_path / "d1.fq", r1)
    write_fastq(tmp_path / "d2.fq", r2)
    r = cli("kernels.align", genome["alt"], tmp_path / "d1.fq", tmp_path / "d2.fq", "-o", tmp_path / "d.bam", "-q")
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path / "d.bam")
    assert all(x.reference_name == "chrUn_JTFH01000001v1_decoy" for x in recs)
    assert np.mean([x.mapping_quality >= 20 for x in recs]) > 0.95
    r = cli("kernels.call", genome["alt"], tmp_path / "d.bam", "-o", tmp_path / "d.vcf.gz", "--json", "-q",
            "--bam-out", tmp_path / "dc.bam")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["variants"] == 0 and len(records(tmp_path / "dc.bam")) == 2400
    r = cli("kernels.call", genome["alt"], tmp_path / "d.bam", "-o", tmp_path / "d.vcf.gz", "--json", "-q",
            "--all-contigs")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["snps_pass"] >= 18


def test_index_records_kinds_and_alt_origin(genome):
    meta = json.load(open(genome["alt"] + ".gfi.json"))
    kinds = {c["name"]: c["kind"] for c in meta["contigs"]}
    assert kinds == {"chrA": "primary", "chrA_KI270001v1_alt": "alt", "chrUn_JTFH01000001v1_decoy": "decoy",
                     "HLA-A*01:01:01:01": "hla", "chrB|x:1": "primary"}
    assert meta["alt"] == {"chrA_KI270001v1_alt": {"primary": "chrA", "start": 20000, "end": 32000}}


# ------------------------------------------------------------------ single-end, lengths

def test_single_end_reads(tmp_path, genome):
    rng = np.random.default_rng(5)
    r1, _, truth = simulate(genome["seq"]["chrA"], 600, rng, [150])
    write_fastq(tmp_path / "s.fq", r1)
    r = cli("kernels.align", genome["alt"], tmp_path / "s.fq", "-o", tmp_path / "s.bam", "--json", "-q",
            "-R", r"@RG\tID:se\tSM:single")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["paired"] is False and res["reads"] == 600 and res["pairs_both_mapped"] == 0
    recs = records(tmp_path / "s.bam")
    assert len(recs) == 600
    assert all(not x.is_paired and x.next_reference_id == -1 and x.template_length == 0 for x in recs)
    assert all(not x.has_tag("MC") and not x.has_tag("ms") and x.get_tag("RG") == "se" for x in recs)
    ok = [placed(x, (truth[int(x.query_name[1:])][0], truth[int(x.query_name[1:])][0] + 150)) for x in recs]
    assert sum(ok) >= 0.99 * len(ok)
    assert subprocess.run([need_tool("samtools"), "quickcheck", str(tmp_path / "s.bam")]).returncode == 0
    # and it is called like any other BAM (duplicates by the single-end rule)
    r = cli("kernels.call", genome["fa"], tmp_path / "s.bam", "-o", tmp_path / "s.vcf.gz", "--json", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records"] == 600


def test_reads_of_100_to_250_bp_and_mixed_lengths(tmp_path, genome):
    rng = np.random.default_rng(7)
    # trimmed reads: lengths anywhere from 100 to 250 within one file
    r1, r2, truth = simulate(genome["seq"]["chrA"], 800, rng, list(range(100, 251)), frag=(300, 600))
    write_fastq(tmp_path / "m1.fq", r1)
    write_fastq(tmp_path / "m2.fq", r2)
    r = cli("kernels.align", genome["alt"], tmp_path / "m1.fq", tmp_path / "m2.fq", "-o", tmp_path / "m.bam", "-q")
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path / "m.bam")
    assert {len(x.query_sequence) for x in recs} >= {100, 250}
    ok = [placed(x, truth[int(x.query_name[1:])]) for x in recs]
    assert sum(ok) >= 0.99 * len(ok)
    assert np.mean([x.is_proper_pair for x in recs]) > 0.98
    # and 2x250 throughout
    r1, r2, _ = simulate(genome["seq"]["chrA"], 200, rng, [250], frag=(400, 700))
    write_fastq(tmp_path / "l1.fq", r1)
    write_fastq(tmp_path / "l2.fq", r2)
    r = cli("kernels.align", genome["alt"], tmp_path / "l1.fq", tmp_path / "l2.fq", "-o", tmp_path / "l.bam",
            "--json", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frac_proper"] > 0.98


# ------------------------------------------------------------------ qualities and names

def test_phred64_is_refused_or_converted(tmp_path, tiny, tiny_index):
    r1, r2 = fastq_records(tiny["r1"])[:3000], fastq_records(tiny["r2"])[:3000]
    write_fastq(tmp_path / "a1.fq", r1)
    write_fastq(tmp_path / "a2.fq", r2)
    shift = lambda recs: [[n, s, p, "".join(chr(ord(c) + 31) for c in q)] for n, s, p, q in recs]  # noqa: E731
    write_fastq(tmp_path / "b1.fq", shift(r1))
    write_fastq(tmp_path / "b2.fq", shift(r2))
    r = cli("kernels.align", tiny_index, tmp_path / "b1.fq", tmp_path / "b2.fq", "-o", tmp_path / "b.bam")
    assert r.returncode == 2 and "look Phred+64" in r.stderr and "--phred64" in r.stderr, r.stderr
    assert not (tmp_path / "b.bam").exists() and not list(tmp_path.glob("b.bam*"))
    r = cli("kernels.align", tiny_index, tmp_path / "b1.fq", tmp_path / "b2.fq", "-o", tmp_path / "b.bam",
            "--phred64", "-q")
    assert r.returncode == 0, r.stderr
    r = cli("kernels.align", tiny_index, tmp_path / "a1.fq", tmp_path / "a2.fq", "-o", tmp_path / "a.bam", "-q")
    assert r.returncode == 0, r.stderr
    # converted, the records are those of the Phred+33 file
    assert [x.to_string() for x in records(tmp_path / "b.bam")] == [x.to_string() for x in records(tmp_path / "a.bam")]
    # and --phred64 on a Phred+33 file is refused
    r = cli("kernels.align", tiny_index, tmp_path / "a1.fq", tmp_path / "a2.fq", "-o", tmp_path / "c.bam", "--phred64")
    assert r.returncode == 2 and "not Phred+64" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("c.bam*"))


def test_read_names_longer_than_bam_allows_are_refused(tmp_path, tiny_index):
    seq = "ACGT" * 25
    long = "x" * 255
    write_fastq(tmp_path / "n1.fq", [["@ok", seq, "+", "I" * 100], [f"@{long}/1", seq, "+", "I" * 100]])
    write_fastq(tmp_path / "n2.fq", [["@ok", seq, "+", "I" * 100], [f"@{long}/2", seq, "+", "I" * 100]])
    r = cli("kernels.align", tiny_index, tmp_path / "n1.fq", tmp_path / "n2.fq", "-o", tmp_path / "n.bam")
    assert r.returncode == 2 and "record 2" in r.stderr and "255 bytes long" in r.stderr and "254" in r.stderr
    assert not list(tmp_path.glob("n.bam*"))
    # 254 is the most a BAM holds: accepted
    write_fastq(tmp_path / "m.fq", [["@" + "y" * 254, seq, "+", "I" * 100]])
    r = cli("kernels.align", tiny_index, tmp_path / "m.fq", "-o", tmp_path / "m.bam", "-q")
    assert r.returncode == 0, r.stderr
    assert records(tmp_path / "m.bam")[0].query_name == "y" * 254


# ------------------------------------------------------------------ lanes

def test_lanes_with_their_read_groups_are_one_sample(tmp_path, tiny, tiny_index):
    """Two lanes of one library (read groups L1, L2): aligned apart, called together; a pair
    sequenced in both lanes is a duplicate across them."""
    r1, r2 = fastq_records(tiny["r1"]), fastq_records(tiny["r2"])
    half = len(r1) // 2
    lane2_r1, lane2_r2 = r1[half:], r2[half:]
    # lane 2 also holds a copy of lane 1's first 300 pairs (worse qualities: lane 1's copy is kept)
    for src, dst in ((r1, lane2_r1), (r2, lane2_r2)):
        for n, s, p, q in src[:300]:
            dst.append([n.replace("tiny.", "again."), s, p, "5" * len(q)])
    bams = []
    for lane, (a, b) in enumerate(((r1[:half], r2[:half]), (lane2_r1, lane2_r2)), 1):
        write_fastq(tmp_path / f"L{lane}_1.fq", a)
        write_fastq(tmp_path / f"L{lane}_2.fq", b)
        bams.append(tmp_path / f"L{lane}.bam")
        r = cli("kernels.align", tiny_index, tmp_path / f"L{lane}_1.fq", tmp_path / f"L{lane}_2.fq", "-o", bams[-1],
                "-q", "-R", rf"@RG\tID:L{lane}\tSM:tinysample\tLB:lib1\tPL:ILLUMINA\tPU:flowcell.{lane}")
        assert r.returncode == 0, r.stderr
    r = cli("kernels.call", tiny["ref"], *bams, "-o", tmp_path / "s.vcf.gz", "--bam-out", tmp_path / "s.bam", "--json",
            "-q")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["records"] == 40000 + 600
    with pysam.VariantFile(str(tmp_path / "s.vcf.gz")) as v:
        assert list(v.header.samples) == ["tinysample"]
    with pysam.AlignmentFile(str(tmp_path / "s.bam")) as f:
        assert sorted(g["ID"] for g in f.header.to_dict()["RG"]) == ["L1", "L2"]
        by = {}
        for x in f:
            by.setdefault(x.get_tag("RG"), []).append(x)
    assert len(by["L1"]) == 20000 and len(by["L2"]) == 20600
    again = [x for x in by["L2"] if x.query_name.startswith("again.")]
    assert len(again) == 600 and sum(x.is_duplicate for x in again) >= 590
    # different samples in one call are refused
    r = cli("kernels.align", tiny_index, tmp_path / "L2_1.fq", tmp_path / "L2_2.fq", "-o", tmp_path / "o.bam", "-q",
            "-R", r"@RG\tID:X\tSM:other")
    r = cli("kernels.call", tiny["ref"], bams[0], tmp_path / "o.bam", "-o", tmp_path / "x.vcf.gz")
    assert r.returncode == 2 and "several samples" in r.stderr


# ------------------------------------------------------------------ contig names

def test_region_strings_and_beds_with_colons_stars_and_bars(tmp_path, genome):
    rng = np.random.default_rng(9)
    reads = {}
    for c in ("HLA-A*01:01:01:01", "chrB|x:1"):
        reads[c] = simulate(genome["seq"][c], 150, rng, [120], frag=(200, 400), names=lambda i, c=c: f"{c[:3]}{i}")
    write_fastq(tmp_path / "h1.fq", reads["HLA-A*01:01:01:01"][0] + reads["chrB|x:1"][0])
    write_fastq(tmp_path / "h2.fq", reads["HLA-A*01:01:01:01"][1] + reads["chrB|x:1"][1])
    lens = {c: len(s) for c, s in genome["seq"].items()}
    bed = tmp_path / "r.bed"
    with open(bed, "w") as f:
        for c, n in lens.items():
            f.write(f"{c}\t0\t{n // 2}\n{c}\t{n // 2}\t{n}\n")
    r = cli("kernels.align", genome["alt"], tmp_path / "h1.fq", tmp_path / "h2.fq", "--regions", bed,
            "--parts", tmp_path / "p.bam", "-q")
    assert r.returncode == 0, r.stderr
    r = cli("kernels.call", genome["fa"], tmp_path / "p.bam", "-o", tmp_path / "all.vcf.gz", "-q")
    assert r.returncode == 0, r.stderr
    for c in ("HLA-A*01:01:01:01", "chrB|x:1"):
        n = lens[c]
        out = tmp_path / f"{c[:3]}.vcf.gz"
        # the htslib forms: NAME:S-E when NAME:S-E is not itself a contig, {NAME}:S-E always
        for spec in (f"{c}:1-{n}", f"{{{c}}}:1-{n}", c):
            r = cli("kernels.call", genome["fa"], tmp_path / "p.bam", "-o", out, "--region", spec, "--json", "-q")
            assert r.returncode == 0, (spec, r.stderr)
        i = list(lens).index(c)
        r = cli("kernels.call", genome["alt"], "--parts", tmp_path / "p.bam", "--regions-bed", bed,
                "--only", f"{2 * i}-{2 * i + 1}", "-o", tmp_path / "b.vcf.gz", "-q")
        assert r.returncode == 0, r.stderr
    # an ambiguous name is refused with both readings
    fa = tmp_path / "amb.fa"
    fa.write_text(">a\nACGTACGTAC\n>a:1-5\nACGTA\n")
    from kernels.errors import InputError
    from kernels.regions import parse_region
    with pytest.raises(InputError, match="ambiguous"):
        parse_region("a:1-5", {"a": 10, "a:1-5": 5})
    assert str(parse_region("{a:1-5}", {"a": 10, "a:1-5": 5})) == "{a:1-5}:1-5"
    assert str(parse_region("HLA-A*01:01:01:01:5-9", {"HLA-A*01:01:01:01": 100})) == "{HLA-A*01:01:01:01}:5-9"


def test_call_reads_only_its_region_of_the_reference(tmp_path, tiny, tiny_index):
    """A region's call (the sample's quality counts given, as the pipeline gives them) reads the
    bases near its region and no more: from a bgzip FASTA through faidx, or the index's bases."""
    bed = tmp_path / "r.bed"
    bed.write_text("chr20_10000001_12000000\t0\t700000\nchr20_10000001_12000000\t700000\t2000000\n"
                   "chr20_34000001_35500000\t0\t1500000\nchr20_60000001_60500000\t0\t500000\n")
    r = cli("kernels.align", tiny_index, tiny["r1"], tiny["r2"], "--regions", bed, "--parts", tmp_path / "p.bam",
            "--qual-counts", tmp_path / "q.json", "-q")
    assert r.returncode == 0, r.stderr
    common = ["--parts", tmp_path / "p.bam", "--regions-bed", bed, "--only", 1, "--qual-counts", tmp_path / "q.json",
              "--json", "-q"]
    r = cli("kernels.call", tiny["ref"], *common, "-o", tmp_path / "r.vcf.gz")
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)["reference"]
    assert ref["read_as"] == "faidx" and 1300000 <= ref["bases_loaded"] < 1300000 + 30000, ref
    r = cli("kernels.call", tiny_index, *common, "-o", tmp_path / "i.vcf.gz")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reference"]["read_as"] == "index"
    body = lambda p: [x for x in gzip.open(p, "rt") if not x.startswith("##")]  # noqa: E731
    assert body(tmp_path / "r.vcf.gz") == body(tmp_path / "i.vcf.gz") and len(body(tmp_path / "r.vcf.gz")) > 100
    # a plain-gzip FASTA cannot be read from the middle: read whole, and a note says to bgzip it
    plain = tmp_path / "plain.fa.gz"
    with gzip.open(tiny["ref"]) as f, gzip.open(plain, "wb") as o:
        o.write(f.read())
    r = cli("kernels.call", plain, *common[:-1], "-o", tmp_path / "p.vcf.gz")
    assert r.returncode == 0, r.stderr
    assert "bgzip" in r.stderr and json.loads(r.stdout)["reference"]["read_as"] == "whole"
    assert body(tmp_path / "p.vcf.gz") == body(tmp_path / "r.vcf.gz")
