"""Reading references, reads and indexes: parsing against plain Python, and every bad input."""
import gzip
import os
import subprocess
import sys

import pytest

from kernels import index as gindex
from kernels.dna import decode
from kernels.errors import InputError
from kernels.fasta import read_fasta
from kernels.fastq import PairedReader, read_pairs_slow


def fq_record(name, seq, qual=None):
    return f"@{name}\n{seq}\n+\n{qual or 'I' * len(seq)}\n"


def write(path, text, gz=False):
    data = text.encode()
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


def run_cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)


# ------------------------------------------------------------------ FASTA

def test_fasta_contigs_case_iupac_and_n(tmp_path):
    fa = write(tmp_path / "r.fa", ">one first\nACGTNN\nacgtRY\n>two\r\nggcc\r\n", gz=False)
    ref = read_fasta(fa)
    assert ref.names == ["one", "two"]
    assert list(ref.lengths) == [12, 4] and list(ref.offsets) == [0, 12, 16]
    assert decode(ref.seq) == "ACGTNNACGTNNGGCC"
    import hashlib
    assert ref.m5[0] == hashlib.md5(b"ACGTNNACGTRY").hexdigest()


def test_fasta_gzip(tmp_path):
    fa = write(tmp_path / "r.fa.gz", ">x\nACGT\n", gz=True)
    assert decode(read_fasta(fa).seq) == "ACGT"


@pytest.mark.parametrize("text,needle", [
    (">a\nACGT\n>a\nACGT\n", "duplicate sequence name 'a'"),
    (">\nACGT\n", "empty name"),
    (">a\n>b\nACGT\n", "'a' has no bases"),
    ("", "empty FASTA"),
    ("ACGT\n", "expected a '>' header"),
    (">a\nAC-GT\n", "line 2: character '-'"),
    (">a b\nACGT\n>c,d\nAC\n", "not a valid SAM reference name"),
])
def test_fasta_bad_input(tmp_path, text, needle):
    fa = write(tmp_path / "bad.fa", text)
    with pytest.raises(InputError) as e:
        read_fasta(fa)
    assert needle in str(e.value) and "bad.fa" in str(e.value)


def test_fasta_missing_and_truncated(tmp_path):
    with pytest.raises(InputError, match="no such FASTA file"):
        read_fasta(str(tmp_path / "none.fa"))
    data = gzip.compress((">a\n" + "ACGT" * 5000 + "\n").encode())
    p = tmp_path / "cut.fa.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated gzip"):
        read_fasta(str(p))


def test_index_cli_bad_fasta_exit_2_and_no_index(tmp_path):
    fa = write(tmp_path / "dup.fa", ">a\nACGTACGTACGTACGTACGTACGT\n>a\nACGT\n")
    r = run_cli("kernels.index", fa, tmp_path / "ix")
    assert r.returncode == 2 and "duplicate sequence name" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("ix*"))


# ------------------------------------------------------------------ index

def test_index_missing_incomplete_foreign_mixed(tmp_path, tiny, tiny_index):
    with pytest.raises(InputError, match="no index with this prefix"):
        gindex.load(str(tmp_path / "nothing"))
    # incomplete: arrays present, description missing
    other = tmp_path / "other"
    fa = write(tmp_path / "o.fa", ">o\n" + "ACGTTGCA" * 500 + "\n")
    gindex.build(fa, str(other))
    os.unlink(str(other) + ".gfi.json")
    with pytest.raises(InputError, match="incomplete"):
        gindex.load(str(other))
    gindex.build(fa, str(other))
    # files of two indexes mixed
    mixed = tmp_path / "mixed"
    for suffix in (".gfi.json", ".gfi.seq.npy", ".gfi.gaps.npy", ".gfi.mzb.npy", ".gfi.mzk.npy", ".gfi.mzo.npy",
                   ".gfi.mzp.npy"):
        src = (str(other) if suffix == ".gfi.seq.npy" else tiny_index) + suffix
        os.symlink(src, str(mixed) + suffix)
    with pytest.raises(InputError, match="mixed"):
        gindex.load(str(mixed))
    # built from another reference than the one given
    with pytest.raises(InputError, match="another reference"):
        gindex.check_reference(gindex.load(str(other)), tiny["ref"])
    gindex.check_reference(gindex.load(tiny_index), tiny["ref"])


# ------------------------------------------------------------------ FASTQ

def test_fastq_batches_match_plain_parsing(tmp_path, tiny):
    slow = read_pairs_slow(tiny["r1"], tiny["r2"])
    seen = 0
    with PairedReader(tiny["r1"], tiny["r2"], batch=3001) as rd:
        for b in rd:
            assert b.first == seen
            for i in (0, b.n // 2, b.n - 1):
                name, s1, q1, s2, q2 = slow[b.first + i]
                assert b.name(i) == name.decode()
                for mate, (s, q) in enumerate(((s1, q1), (s2, q2))):
                    r = 2 * i + mate
                    assert decode(b.seq[b.roff[r]:b.roff[r + 1]]) == s.decode().upper().replace(".", "N")
                    assert bytes(b.qual[b.roff[r]:b.roff[r + 1]]) == q
            seen += b.n
    assert seen == len(slow) == 20000


def test_fastq_guided_batches_shrink_at_the_end_and_do_not_vary(tiny):
    """The aligner's batches get smaller near the end of the files (so MPI ranks finish
    together), hold every pair once, and are the same on every read of the same files."""
    def sizes(guided):
        with PairedReader(tiny["r1"], tiny["r2"], batch=4000, guided=guided) as rd:
            return [(b.first, b.n) for b in rd]

    plain = sizes(False)
    assert [n for _, n in plain] == [4000] * 5
    guided = sizes(True)
    assert guided == sizes(True)
    ns = [n for _, n in guided]
    assert sum(ns) == 20000 and ns[0] == 4000
    assert len(ns) > 5 and min(ns) < 4000 and all(n >= 1 for n in ns)
    assert ns[-2] <= ns[1]            # tapering: late batches are not larger than early ones
    firsts = [f for f, _ in guided]
    assert firsts == [sum(ns[:i]) for i in range(len(ns))]


def test_fastq_crlf_no_final_newline_and_suffixes(tmp_path):
    r1 = write(tmp_path / "a_1.fq", "@r1/1 x\r\nACGN\r\n+\r\nIIII\r\n@r2/1\nAC\n+r2\n#I")
    r2 = write(tmp_path / "a_2.fq", "@r1/2\nTTTT\n+\nIIII\n\n@r2/2\nGG\n+\n5I\n")
    with PairedReader(r1, r2) as rd:
        (b,) = list(rd)
    assert b.n == 2 and b.name(0) == "r1" and b.name(1) == "r2"
    assert decode(b.seq[b.roff[0]:b.roff[1]]) == "ACGN"
    assert list(b.qual[b.roff[2]:b.roff[3]]) == [2, 40]


BAD_FASTQ = {
    "truncated gzip": ("gz_cut", "truncated gzip"),
    "counts differ": ("short_r2", "must hold the same reads"),
    "names differ": ("names", "names differ"),
    "empty": ("empty", "no reads"),
    "qual length": ("qlen", "quality string of a different length"),
    "not fastq": ("fasta", "does not start with '@'"),
    "no plus": ("noplus", "no '+' separator"),
    "bad base": ("base", "not a base"),
    "mid-record end": ("cut", "ends in the middle of a record"),
}


def make_bad(tmp_path, kind):
    good = "".join(fq_record(f"r{i}", "ACGT" * 10) for i in range(50))
    r1 = write(tmp_path / "r1.fq", good)
    r2 = write(tmp_path / "r2.fq", good)
    if kind == "gz_cut":
        big = "".join(fq_record(f"r{i}", "ACGT" * 30) for i in range(20000))
        data = gzip.compress(big.encode())
        (tmp_path / "r1.fq.gz").write_bytes(data[: len(data) * 2 // 3])
        r1 = str(tmp_path / "r1.fq.gz")
        r2 = write(tmp_path / "r2.fq", big)
    elif kind == "short_r2":
        r2 = write(tmp_path / "r2.fq", "".join(fq_record(f"r{i}", "ACGT" * 10) for i in range(49)))
    elif kind == "names":
        r2 = write(tmp_path / "r2.fq", good.replace("@r7\n", "@x7\n"))
    elif kind == "empty":
        r1 = write(tmp_path / "r1.fq", "")
        r2 = write(tmp_path / "r2.fq", "")
    elif kind == "qlen":
        r1 = write(tmp_path / "r1.fq", good.replace("I" * 40 + "\n@r3\n", "I" * 39 + "\n@r3\n"))
    elif kind == "fasta":
        r1 = write(tmp_path / "r1.fq", ">r0\nACGT\n")
    elif kind == "noplus":
        r1 = write(tmp_path / "r1.fq", good.replace("+\n", "-\n", 1))
    elif kind == "base":
        r2 = write(tmp_path / "r2.fq", good.replace("ACGT" * 10, "ACGT" * 9 + "AC*T", 1))
    elif kind == "cut":
        r1 = write(tmp_path / "r1.fq", good[: len(good) - 30])
    return r1, r2


@pytest.mark.parametrize("case", sorted(BAD_FASTQ))
def test_fastq_bad_input(tmp_path, case):
    kind, needle = BAD_FASTQ[case]
    r1, r2 = make_bad(tmp_path, kind)
    with pytest.raises(InputError) as e:
        with PairedReader(r1, r2, batch=17) as rd:
            for _ in rd:
                pass
    assert needle in str(e.value)
    assert ("r1.fq" in str(e.value)) or ("r2.fq" in str(e.value))


@pytest.mark.parametrize("case", ["truncated gzip", "counts differ", "names differ", "empty", "qual length"])
def test_align_cli_bad_input_exit_2_no_bam(tmp_path, tiny_index, case):
    kind, needle = BAD_FASTQ[case]
    r1, r2 = make_bad(tmp_path, kind)
    out = tmp_path / "out.bam"
    r = run_cli("kernels.align", tiny_index, r1, r2, "-o", out, "--batch", "10", "-q")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert not [p for p in os.listdir(tmp_path) if "out.bam" in p], os.listdir(tmp_path)


def test_align_cli_missing_index_and_files(tmp_path, tiny, tiny_index):
    r = run_cli("kernels.align", tmp_path / "noindex", tiny["r1"], tiny["r2"], "-o", tmp_path / "o.bam")
    assert r.returncode == 2 and "kernels.index" in r.stderr
    r = run_cli("kernels.align", tiny_index, tmp_path / "none_1.fq", tiny["r2"], "-o", tmp_path / "o.bam")
    assert r.returncode == 2 and "none_1.fq: no such FASTQ file" in r.stderr
    other = tmp_path / "o.fa"
    other.write_text(">o\n" + "ACGTTGCAAC" * 300 + "\n")
    r = run_cli("kernels.align", tiny_index, tiny["r1"], tiny["r2"], "-o", tmp_path / "o.bam", "--reference", other)
    assert r.returncode == 2 and "another reference" in r.stderr
    r = run_cli("kernels.align", tiny_index, tiny["r1"], tiny["r2"], "-o", tmp_path / "o.bam", "-R", "ID:x")
    assert r.returncode == 2 and "@RG" in r.stderr
    assert not list(tmp_path.glob("o.bam*"))
