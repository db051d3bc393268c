"""The streaming index build against its slow twin: the same table whatever the block sizes,
the N runs, contig kinds and ALT origins, the memory it says it needs, and bad input."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels import index as gindex
from kernels.dna import ENCODE
from kernels.errors import InputError
from kernels.fasta import encode_text, encode_text_slow, read_fasta, stream_fasta
from kernels.sketch import sketch, sketch_stream, stream_state


def random_fasta(path, rng, contigs, wrap=60, gz=False, lower=False):
    """A FASTA of random contigs {name: length} with N runs and repeats; returns the sequences."""
    seqs = {}
    for name, n in contigs.items():
        s = rng.choice(list("ACGT"), n)
        for _ in range(int(rng.integers(0, 4))):                    # N runs, some at the ends
            a = int(rng.integers(0, n))
            s[a:a + int(rng.integers(1, 300))] = "N"
        if n > 400:
            s[n // 2:n // 2 + 150] = s[:150]                            # a repeated stretch
        if lower:
            s[: n // 3] = np.char.lower(s[: n // 3])
        seqs[name] = "".join(s)
    text = "".join(f">{nm} some description\n" + ("\n".join(sq[i:i + wrap] for i in range(0, len(sq), wrap))
                                                  if wrap else sq) + "\n" for nm, sq in seqs.items())
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return seqs


def table_of(prefix):
    ix = gindex.load(prefix)
    return ix, {a: np.asarray(getattr(ix, a)).astype(np.int64) for a in ("mzb", "mzk", "mzo", "mzp")}


@pytest.mark.parametrize("k,w", [(19, 10), (15, 5), (21, 11), (11, 1)])
def test_build_matches_slow_twin_across_block_sizes(tmp_path, monkeypatch, k, w):
    rng = np.random.default_rng(k * 100 + w)
    fa = tmp_path / "r.fa.gz"
    random_fasta(fa, rng, {"chr1": 7000, "chr2": 1300, "HLA-A*01:01:01:01": 900, "chrUn_x_decoy": 40}, gz=True,
                 lower=True)
    ref = read_fasta(str(fa))
    gindex.build(str(fa), str(tmp_path / "big"), k=k, w=w)
    # tiny blocks: every boundary (FASTA text, sketch jobs) falls inside runs, lines and headers
    monkeypatch.setattr(gindex, "FASTA_BLOCK", 97)
    monkeypatch.setattr(gindex, "SEQ_BLOCK", 13)
    gindex.build(str(fa), str(tmp_path / "small"), k=k, w=w)
    ix, big = table_of(str(tmp_path / "big"))
    _, small = table_of(str(tmp_path / "small"))
    slow = gindex.build_slow(ref, k, w, ix.bucket_bits)
    for a in ("mzb", "mzk", "mzo", "mzp"):
        np.testing.assert_array_equal(big[a], slow[a], err_msg=a)
        np.testing.assert_array_equal(small[a], slow[a], err_msg=a)
    np.testing.assert_array_equal(np.asarray(ix.seq), ref.seq)
    assert ix.names == ref.names and [c["m5"] for c in ix.meta["contigs"]] == ref.m5
    assert ix.meta["n_minimizers"] == len(slow["mzp"]) and ix.meta["n_distinct"] == len(slow["mzk"])


def test_unwrapped_and_wrapped_fasta_give_one_index(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    contigs = {"a": 5000, "b": 2500}
    random_fasta(tmp_path / "wrap.fa", rng, contigs, wrap=60)
    rng = np.random.default_rng(5)
    random_fasta(tmp_path / "flat.fa", rng, contigs, wrap=0)
    monkeypatch.setattr(gindex, "FASTA_BLOCK", 1000)
    gindex.build(str(tmp_path / "wrap.fa"), str(tmp_path / "w"))
    gindex.build(str(tmp_path / "flat.fa"), str(tmp_path / "f"))
    a, ta = table_of(str(tmp_path / "w"))
    b, tb = table_of(str(tmp_path / "f"))
    assert a.meta["reference_md5"] == b.meta["reference_md5"]
    for x in ta:
        np.testing.assert_array_equal(ta[x], tb[x])


def test_gaps_are_the_n_runs(tmp_path, monkeypatch):
    from master.planner import n_runs
    rng = np.random.default_rng(11)
    fa = tmp_path / "g.fa"
    random_fasta(fa, rng, {"x": 4000, "y": 3000, "z": 500})
    monkeypatch.setattr(gindex, "FASTA_BLOCK", 211)
    gindex.build(str(fa), str(tmp_path / "g"))
    ix = gindex.load(str(tmp_path / "g"))
    ref = read_fasta(str(fa))
    want = []
    for c in range(3):
        s, e = n_runs(ref.seq[ref.offsets[c]:ref.offsets[c + 1]])
        want += [[int(a + ref.offsets[c]), int(b + ref.offsets[c])] for a, b in zip(s, e)]
    assert ix.gaps.tolist() == want
    assert ix.meta["non_n_bases"] == int((ref.seq < 4).sum())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 400), st.sampled_from([11, 15, 19, 21]), st.integers(1, 16),
       st.lists(st.integers(0, 400), max_size=5))
def test_sketch_stream_matches_whole_sketch(seed, n, k, w, cuts):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, n).astype(np.uint8)
    if n and seed % 3 == 0:
        s[rng.integers(0, n, 4)] = 4
    if n and seed % 5 == 0:
        s[: n // 2] = s[0] % 4
    want = sketch(s, k, w)
    state = stream_state(w)
    oh, ov = np.empty(n + 8, np.uint64), np.empty(n + 8, np.int64)
    m = 0
    bounds = sorted({0, n, *[c for c in cuts if c <= n]})
    for a, b in zip(bounds[:-1], bounds[1:]):
        m = sketch_stream(s[a:b], b - a, 1000 + a, k, w, *state, oh, ov, m, False)
    m = sketch_stream(s[:0], 0, 1000 + n, k, w, *state, oh, ov, m, True)
    np.testing.assert_array_equal(oh[:m], want[0])
    np.testing.assert_array_equal((ov[:m] >> 1) - 1000, want[1])
    np.testing.assert_array_equal(ov[:m] & 1, want[2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 3, 4, 4, 4]), max_size=60), st.integers(-1, 5), st.integers(0, 3))
def test_gap_runs_match_slow_twin(codes, open_at, cap):
    codes = np.array(codes, np.uint8)
    base = 10
    open_at = -1 if open_at < 0 else open_at
    out = np.empty((cap, 2), np.int64)
    n, still = gindex.gap_runs(codes, base, open_at, out)
    runs, still_slow = gindex.gap_runs_slow(codes, base, open_at)
    assert n == len(runs) and still == still_slow
    out = np.empty((n, 2), np.int64)
    gindex.gap_runs(codes, base, open_at, out)
    assert out.tolist() == runs


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80).map(lambda b: bytes(x for x in b)) | st.text("ACGTNacgtnRY\n\r", max_size=80).map(str.encode))
def test_encode_text_matches_slow_twin(raw):
    arr = np.frombuffer(raw, np.uint8)
    codes, upper = np.empty(len(raw), np.uint8), np.empty(len(raw), np.uint8)
    n, bad = encode_text(arr, ENCODE, codes, upper)
    c2, u2, bad2 = encode_text_slow(raw)
    assert bad == bad2
    if bad < 0:
        assert codes[:n].tolist() == c2.tolist() and upper[:n].tobytes() == u2


def test_stream_fasta_reports_lines_across_blocks(tmp_path):
    text = ">a\n" + "ACGT\n" * 50 + ">b x\n" + "AC\n" * 20 + "AC>G\n"
    (tmp_path / "x.fa").write_text(text)
    with pytest.raises(InputError, match=r"line 73: character '>' in sequence 'b'"):
        list(stream_fasta(str(tmp_path / "x.fa"), block=7))
    (tmp_path / "y.fa").write_text(text.replace("AC>G", "ACxG"))
    with pytest.raises(InputError, match=r"line 73: character 'x'"):
        list(stream_fasta(str(tmp_path / "y.fa"), block=5))


def test_kinds_and_alt_origins(tmp_path):
    rng = np.random.default_rng(2)
    fa = tmp_path / "k.fa"
    random_fasta(fa, rng, {"chr6": 6000, "chr6_GL1v1_alt": 800, "chrUn_KN1v1_decoy": 300, "chrEBV": 300,
                           "HLA-A*01:01:01:01": 500, "chr1_KI1v1_random": 400, "myalt": 600})
    alt = tmp_path / "alt.tsv"
    alt.write_text("alt\tprimary\tstart\tend\nchr6_GL1v1_alt\tchr6\t1000\t1800\nmyalt\tchr6\t3000\t3600\n")
    gindex.build(str(fa), str(tmp_path / "k"), alt_path=str(alt))
    ix = gindex.load(str(tmp_path / "k"))
    assert ix.kinds == ["primary", "alt", "decoy", "decoy", "hla", "primary", "alt"]
    assert ix.meta["alt"]["myalt"] == {"primary": "chr6", "start": 3000, "end": 3600}
    for bad, msg in [("x_alt\tchr6\t1\t5\n", "'x_alt' is not in the reference"),
                     ("myalt\tchr9\t1\t5\n", "contig 'chr9', which is not"),
                     ("myalt\tchr6\t10\t9000\n", "beyond its end"),
                     ("myalt\tchr6\t10\n", "line 1: expected ALT name")]:
        alt.write_text(bad)
        with pytest.raises(InputError, match=msg):
            gindex.build(str(fa), str(tmp_path / "bad"), alt_path=str(alt))
        assert not os.path.exists(str(tmp_path / "bad") + ".gfi.json")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kernels.index", *map(str, args)], capture_output=True, text=True)


def test_memory_too_small_is_refused_with_what_it_needs(tmp_path):
    fa = tmp_path / "m.fa"
    random_fasta(fa, np.random.default_rng(1), {"m": 3000})
    r = _cli(fa, tmp_path / "m", "--memory", "50")
    assert r.returncode == 2 and "needs about" in r.stderr and "--memory" in r.stderr and "Traceback" not in r.stderr
    assert not any(p.name.startswith("m.gfi") for p in tmp_path.iterdir())
    need = int(r.stderr.split("needs about ")[1].split(" MB")[0].replace(",", ""))
    r = _cli(fa, tmp_path / "m", "--memory", need, "--json")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["build"]["peak_rss_mb"] > 0 and meta["contigs"][0]["name"] == "m"


def test_progress_lines_and_no_temporary_files(tmp_path):
    fa = tmp_path / "p.fa"
    random_fasta(fa, np.random.default_rng(3), {"p": 5000, "q": 100})
    r = _cli(fa, tmp_path / "p")
    assert r.returncode == 0
    assert "kernels.index: sorting" in r.stderr and "index " in r.stderr and "peak" in r.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["p.fa"] + [f"p.gfi.{x}" for x in ("json", "seq.npy", "gaps.npy", "mzb.npy", "mzk.npy",
                                                             "mzo.npy", "mzp.npy")])
