"""The numba BAM encoder against pysam (its slow twin): byte for byte."""
import os

import numpy as np
import pysam
import pytest

from kernels import bam
from kernels.aligner import Aligner
from kernels.types import F_MUNMAP, F_PAIRED, F_READ1, F_READ2, F_UNMAP
from kernels.fastq import PairedReader
from kernels import index as gindex


def encode_both(idx, b, aln, cigs, cstride, rg=None):
    names = idx.names
    text = bam.header_text(names, idx.lengths, [c["m5"] for c in idx.meta["contigs"]],
                           f"@RG\tID:{rg}\tSM:s" if rg else None)
    rg_arr = np.frombuffer(rg.encode(), np.uint8).copy() if rg else np.empty(0, np.uint8)
    sel = np.ones(len(aln), np.bool_)
    fast = bam.encode_batch(aln, b.names, b.noff, b.seq, b.qual, b.roff, cigs, cstride, True, np.asarray(idx.seq), idx.offsets,
                            rg_arr, sel, np.empty(len(aln), np.int64)).tobytes()
    slow = bam.encode_slow(aln, b.names, b.noff, b.seq, b.qual, b.roff, cigs, cstride, True, np.asarray(idx.seq), idx.offsets,
                           text, rg, sel)
    return fast, slow


def first_batch(tiny, n):
    with PairedReader(tiny["r1"], tiny["r2"], batch=n) as rd:
        return next(iter(rd))


def test_encoder_matches_pysam_on_aligner_output(tiny, tiny_index):
    idx = gindex.load(tiny_index)
    b = first_batch(tiny, 2000)
    aln, cigs, cstride, _ = Aligner(idx).align(b)
    fast, slow = encode_both(idx, b, aln, cigs, cstride, rg="lane1")
    assert fast == slow


def test_encoder_matches_pysam_on_edge_records(tiny, tiny_index):
    """Unmapped reads (alone and both), reverse strand, indels, big tags, odd lengths."""
    idx = gindex.load(tiny_index)
    b = first_batch(tiny, 6)
    aln, cigs, cstride, _ = Aligner(idx).align(b)
    # pair 0: read 2 unmapped, placed at its mate
    a = aln[1]
    a["flag"] = F_PAIRED | F_READ2 | F_UNMAP
    a["ncig"] = 0
    a["mapq"] = 0
    a["tid"], a["pos"] = aln[0]["tid"], aln[0]["pos"]
    aln[0]["flag"] |= F_MUNMAP
    # pair 1: both unmapped
    for r in (2, 3):
        aln[r]["flag"] = F_PAIRED | F_UNMAP | F_MUNMAP | (F_READ1 if r == 2 else F_READ2)
        aln[r]["tid"] = aln[r]["pos"] = aln[r]["mtid"] = aln[r]["mpos"] = -1
        aln[r]["ncig"] = 0
    # pair 2: an insertion, a deletion and clips on read 4; a large negative TLEN and AS
    L = int(b.roff[5] - b.roff[4])
    cig = [(4, 3), (0, 40), (1, 2), (0, 50), (2, 5), (0, L - 3 - 40 - 2 - 50 - 7), (4, 7)]
    for t, (op, n) in enumerate(cig):
        cigs[4 * cstride + t] = (n << 4) | op
    aln[4]["ncig"] = len(cig)
    aln[4]["tlen"] = -70000
    aln[4]["score"] = 300
    aln[4]["sub"] = 70000
    fast, slow = encode_both(idx, b, aln, cigs, cstride)
    assert fast == slow


def test_encoder_writes_cigars_of_more_than_64_operations(tiny, tiny_index):
    """A CIGAR's room in the buffer follows the batch's longest read (types.cigar_stride), not a
    fixed count: a read with 121 operations is encoded as pysam encodes it."""
    from kernels.types import cigar_stride
    idx = gindex.load(tiny_index)
    b = first_batch(tiny, 4)
    aln, cigs, cstride, _ = Aligner(idx).align(b)
    L = int(b.roff[3] - b.roff[2])
    assert cstride == cigar_stride(L) and cstride >= 2 * L + 1
    cig = [(0, 1), (1, 1)] * 60 + [(0, L - 120)]
    for t, (op, n) in enumerate(cig):
        cigs[2 * cstride + t] = (n << 4) | op
    aln[2]["ncig"] = len(cig)
    fast, slow = encode_both(idx, b, aln, cigs, cstride)
    assert fast == slow


def test_written_bam_reads_back(tmp_path, tiny, tiny_index):
    idx = gindex.load(tiny_index)
    b = first_batch(tiny, 500)
    aln, cigs, cstride, _ = Aligner(idx).align(b)
    text = bam.header_text(idx.names, idx.lengths, [c["m5"] for c in idx.meta["contigs"]])
    data = bam.encode_batch(aln, b.names, b.noff, b.seq, b.qual, b.roff, cigs, cstride, True, np.asarray(idx.seq), idx.offsets,
                            np.empty(0, np.uint8), np.ones(len(aln), np.bool_), np.empty(len(aln), np.int64))
    out = str(tmp_path / "x.bam")
    w = bam.BamWriter()
    w.open(out, bam.header_bytes(text, idx.names, idx.lengths))
    w.write(data)
    w.close()
    with pysam.AlignmentFile(out) as f:
        recs = list(f)
        assert [c["SN"] for c in f.header.to_dict()["SQ"]] == idx.names
    assert len(recs) == 1000
    assert recs[0].query_name == b.name(0) and recs[0].is_read1 and recs[1].is_read2


def test_bgzip_writer_gives_the_pysam_writers_bam_and_is_chosen_only_when_installed(tmp_path, tiny, tiny_index,
                                                                                    monkeypatch):
    """Plain BAMs (the call stage's region BAMs) go through htslib's bgzip when it is there: the
    same bytes once decompressed as pysam's writer, a valid BGZF end; without bgzip, pysam's."""
    import gzip
    import shutil
    idx = gindex.load(tiny_index)
    b = first_batch(tiny, 500)
    aln, cigs, cstride, _ = Aligner(idx).align(b)
    text = bam.header_text(idx.names, idx.lengths, [c["m5"] for c in idx.meta["contigs"]])
    data = bam.encode_batch(aln, b.names, b.noff, b.seq, b.qual, b.roff, cigs, cstride, True, np.asarray(idx.seq),
                            idx.offsets, np.empty(0, np.uint8), np.ones(len(aln), np.bool_), np.empty(len(aln), np.int64))
    header = bam.header_bytes(text, idx.names, idx.lengths)
    outs = {}
    for name, w in (("pysam", bam.BamWriter(6)), ("bgzip", bam.BgzipWriter(5))):
        outs[name] = str(tmp_path / f"{name}.bam")
        w.open(outs[name], header)
        w.write(data[:len(data) // 2])
        w.write(data[len(data) // 2:])
        w.close()
    raw = {k: gzip.open(v).read() for k, v in outs.items()}
    assert raw["bgzip"] == raw["pysam"] == header + bytes(data)
    assert open(outs["bgzip"], "rb").read()[-28:] == bam.BGZF_EOF
    with pysam.AlignmentFile(outs["bgzip"]) as f:
        assert sum(1 for _ in f) == 1000
    assert isinstance(bam.for_plain_bam(6), bam.BgzipWriter) == bool(shutil.which("bgzip"))
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    w = bam.for_plain_bam(6)
    assert type(w) is bam.BamWriter
    w.abort()


def test_concat_records_joins_headerless_parts(tmp_path, tiny, tiny_index):
    """How K ranks' batch files become one BAM: BGZF blocks copied, never recompressed; a part
    that was not completely written (no end-of-file block) is refused."""
    idx = gindex.load(tiny_index)
    text = bam.header_text(idx.names, idx.lengths, [c["m5"] for c in idx.meta["contigs"]])
    header = bam.header_bytes(text, idx.names, idx.lengths)
    parts, names = [], []
    w = bam.BamWriter()
    with PairedReader(tiny["r1"], tiny["r2"], batch=300) as rd:
        for k, b in zip(range(3), rd):
            aln, cigs, cstride, _ = Aligner(idx).align(b)
            data = bam.encode_batch(aln, b.names, b.noff, b.seq, b.qual, b.roff, cigs, cstride, True, np.asarray(idx.seq),
                                    idx.offsets, np.empty(0, np.uint8), np.ones(len(aln), np.bool_),
                                    np.empty(len(aln), np.int64))
            parts.append(str(tmp_path / f"part{k}.bgzf"))
            w.open(parts[-1], b"")
            w.write(data)
            w.close_file()
            names += [b.name(i) for i in range(b.n) for _ in (0, 1)]
    w.close()
    out = str(tmp_path / "all.bam")
    bam.concat_records(out, header, parts)
    with pysam.AlignmentFile(out) as f:
        assert [r.query_name for r in f] == names
    assert pysam.quickcheck(out) == ""
    with open(parts[1], "r+b") as f:          # cut off its end-of-file block
        f.truncate(os.path.getsize(parts[1]) - 28)
    with pytest.raises(OSError, match="end-of-file block"):
        bam.concat_records(str(tmp_path / "bad.bam"), header, parts)
