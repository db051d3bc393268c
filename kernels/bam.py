"""BAM output: records encoded by a numba kernel, compressed by htslib's BGZF (pysam.BGZFile).

Building a pysam.AlignedSegment per read costs microseconds of Python each; the aligner instead
encodes a whole batch of records into one byte buffer (the BAM record layout of the SAM spec,
section 4.2) in parallel, and a writer thread hands it to BGZF while the next batch is aligned.
The slow twin (`encode_slow`) builds the same records with pysam, and the tests require the two
to produce identical bytes.

Records are described by types.ALN; a read's CIGAR sits in the batch's cigar buffer at read * stride
(types.cigar_stride). Paired batches hold mates 2i and 2i+1 and one name per pair; single-end
batches one name per read.
"""
import os
import queue
import struct
import subprocess
import sys
import threading

import numpy as np
import pysam
import pysam.libcbgzf

from kernels._numba import jit, pjit, prange
from kernels.dna import BAM_NT16 as _NT16
from kernels.types import ALN, F_MUNMAP, F_PAIRED, F_UNMAP  # noqa: F401  (ALN: the records encoded here)

_REFCHAR = np.frombuffer(b"ACGTN", dtype=np.uint8).copy()
_OPCHAR = np.frombuffer(b"MIDNSHP=X", dtype=np.uint8).copy()
_COMP = np.array([3, 2, 1, 0, 4], dtype=np.uint8)


@jit
def reg2bin(beg, end):
    """UCSC binning scheme (SAM spec 5.3) for the 0-based half-open interval [beg, end)."""
    end -= 1
    if beg >> 14 == end >> 14:
        return ((1 << 15) - 1) // 7 + (beg >> 14)
    if beg >> 17 == end >> 17:
        return ((1 << 12) - 1) // 7 + (beg >> 17)
    if beg >> 20 == end >> 20:
        return ((1 << 9) - 1) // 7 + (beg >> 20)
    if beg >> 23 == end >> 23:
        return ((1 << 6) - 1) // 7 + (beg >> 23)
    if beg >> 26 == end >> 26:
        return ((1 << 3) - 1) // 7 + (beg >> 26)
    return 0


@jit
def ref_span(cig, off, n):
    s = 0
    for t in range(n):
        op = cig[off + t] & 15
        if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
            s += cig[off + t] >> 4
    return s


@jit
def _put32(out, p, v):
    v = np.int64(v) & 0xFFFFFFFF
    out[p] = v & 255
    out[p + 1] = (v >> 8) & 255
    out[p + 2] = (v >> 16) & 255
    out[p + 3] = (v >> 24) & 255
    return p + 4


@jit
def _put16(out, p, v):
    out[p] = v & 255
    out[p + 1] = (v >> 8) & 255
    return p + 2


@jit
def _int_tag_size(v):
    if v >= 0:
        return 1 if v <= 255 else (2 if v <= 65535 else 4)
    return 1 if v >= -128 else (2 if v >= -32768 else 4)


@jit
def _put_int_tag(out, p, a, b, v):
    """An integer tag with the smallest type that holds v (the same choice as pysam/htslib)."""
    out[p] = a
    out[p + 1] = b
    p += 2
    if v >= 0:
        if v <= 255:
            out[p] = 67       # C
            out[p + 1] = v
            return p + 2
        if v <= 65535:
            out[p] = 83       # S
            return _put16(out, p + 1, v)
        out[p] = 73           # I
        return _put32(out, p + 1, v)
    if v >= -128:
        out[p] = 99           # c
        out[p + 1] = v & 255
        return p + 2
    if v >= -32768:
        out[p] = 115          # s
        return _put16(out, p + 1, v & 0xFFFF)
    out[p] = 105              # i
    return _put32(out, p + 1, v)


@jit
def _put_uint_text(out, p, v):
    """Decimal digits of v >= 0."""
    if v == 0:
        out[p] = 48
        return p + 1
    n = 0
    t = v
    while t > 0:
        n += 1
        t //= 10
    for i in range(n):
        out[p + n - 1 - i] = 48 + v % 10
        v //= 10
    return p + n


@jit
def _digits(v):
    n = 1
    while v >= 10:
        n += 1
        v //= 10
    return n


@jit
def md_nm(q, L, rev, ref, rstart, cig, off, ncig, out):
    """MD string of an alignment written at out[0:], and its NM. q is the read as given;
    rev=1 means it aligns reverse-complemented. Returns (md_length, nm)."""
    p = 0
    nm = 0
    run = 0
    qi = 0
    ri = rstart
    for t in range(ncig):
        op = cig[off + t] & 15
        ln = cig[off + t] >> 4
        if op == 0 or op == 7 or op == 8:
            for u in range(ln):
                b = q[qi + u] if rev == 0 else _COMP[q[L - 1 - qi - u]]
                r = ref[ri + u]
                if b == r and b < 4:
                    run += 1
                else:
                    nm += 1
                    p = _put_uint_text(out, p, run)
                    out[p] = _REFCHAR[r]
                    p += 1
                    run = 0
            qi += ln
            ri += ln
        elif op == 1:
            nm += ln
            qi += ln
        elif op == 2:
            nm += ln
            p = _put_uint_text(out, p, run)
            out[p] = 94   # ^
            p += 1
            for u in range(ln):
                out[p + u] = _REFCHAR[ref[ri + u]]
            p += ln
            ri += ln
            run = 0
        elif op == 4:
            qi += ln
    p = _put_uint_text(out, p, run)
    return p, nm


@jit
def _cigar_text_len(cig, off, n):
    s = 0
    for t in range(n):
        s += _digits(cig[off + t] >> 4) + 1
    return s


@jit
def _encode_one(r, aln, names, noff, seq, qual, roff, cig, cstride, paired, ref, refoff, rg, out, p, md_buf,
                write):
    """Encode read r at out[p:] (or only measure it when write is False); returns the end."""
    a = aln[r]
    pair = r >> 1 if paired else r
    mate = r ^ 1
    s0 = roff[r]
    L = roff[r + 1] - s0
    q = seq[s0:s0 + L]
    nl = noff[pair + 1] - noff[pair]
    co = r * cstride
    mapped = (a.flag & F_UNMAP) == 0
    start = p
    if write:
        if mapped:
            end = a.pos + ref_span(cig, co, a.ncig)
        else:
            end = a.pos + 1
        p = _put32(out, p + 4, a.tid)
        p = _put32(out, p, a.pos)
        out[p] = nl + 1
        out[p + 1] = a.mapq
        p = _put16(out, p + 2, reg2bin(a.pos, end))
        p = _put16(out, p, a.ncig)
        p = _put16(out, p, a.flag)
        p = _put32(out, p, L)
        p = _put32(out, p, a.mtid)
        p = _put32(out, p, a.mpos)
        p = _put32(out, p, a.tlen)
        for t in range(nl):
            out[p + t] = names[noff[pair] + t]
        out[p + nl] = 0
        p += nl + 1
        for t in range(a.ncig):
            p = _put32(out, p, cig[co + t])
        for t in range(0, L, 2):
            b0 = _NT16[q[t]] if a.rev == 0 else _NT16[_COMP[q[L - 1 - t]]]
            b1 = 0
            if t + 1 < L:
                b1 = _NT16[q[t + 1]] if a.rev == 0 else _NT16[_COMP[q[L - 2 - t]]]
            out[p] = (b0 << 4) | b1
            p += 1
        for t in range(L):
            out[p + t] = qual[s0 + t] if a.rev == 0 else qual[s0 + L - 1 - t]
        p += L
    else:
        p += 36 + nl + 1 + 4 * a.ncig + (L + 1) // 2 + L
    if mapped:
        gstart = refoff[a.tid] + a.pos
        mdlen, nm = md_nm(q, L, a.rev, ref, gstart, cig, co, a.ncig, md_buf)
        if write:
            p = _put_int_tag(out, p, 78, 77, nm)            # NM
            out[p] = 77
            out[p + 1] = 68
            out[p + 2] = 90                                  # MD:Z
            p += 3
            for t in range(mdlen):
                out[p + t] = md_buf[t]
            out[p + mdlen] = 0
            p += mdlen + 1
        else:
            p += 2 + 1 + _int_tag_size(nm) + 3 + mdlen + 1
    ispair = (a.flag & F_PAIRED) != 0
    mmapped = ispair and (a.flag & F_MUNMAP) == 0
    if mmapped:
        mc = mate * cstride
        mn = aln[mate].ncig
        if write:
            out[p] = 77
            out[p + 1] = 67
            out[p + 2] = 90                                  # MC:Z
            p += 3
            for t in range(mn):
                p = _put_uint_text(out, p, cig[mc + t] >> 4)
                out[p] = _OPCHAR[cig[mc + t] & 15]
                p += 1
            out[p] = 0
            p += 1
        else:
            p += 3 + _cigar_text_len(cig, mc, mn) + 1
    if ispair:
        # ms: the mate's score, sum of its base qualities >= 15 (as samtools fixmate -m), so that
        # duplicate marking can rank a pair from either of its records
        ms = 0
        for t in range(roff[mate], roff[mate + 1]):
            if qual[t] >= 15:
                ms += qual[t]
        if write:
            p = _put_int_tag(out, p, 109, 115, ms)           # ms
        else:
            p += 3 + _int_tag_size(ms)
    if mapped:
        if write:
            p = _put_int_tag(out, p, 65, 83, a.score)       # AS
        else:
            p += 3 + _int_tag_size(a.score)
        if a.sub >= 0:
            if write:
                p = _put_int_tag(out, p, 88, 83, a.sub)     # XS
            else:
                p += 3 + _int_tag_size(a.sub)
    if rg.shape[0] > 0:
        if write:
            out[p] = 82
            out[p + 1] = 71
            out[p + 2] = 90                                  # RG:Z
            p += 3
            for t in range(rg.shape[0]):
                out[p + t] = rg[t]
            out[p + rg.shape[0]] = 0
            p += rg.shape[0] + 1
        else:
            p += 3 + rg.shape[0] + 1
    if write:
        _put32(out, start, p - start - 4)
    return p


@pjit
def encode_batch(aln, names, noff, seq, qual, roff, cig, cstride, paired, ref, refoff, rg, select, sizes):
    """Encode the reads whose `select` flag is set, in read order; returns the bytes as uint8[].
    cig holds read r's CIGAR at r * cstride; paired: names are per pair (mates 2i, 2i+1)."""
    nreads = aln.shape[0]
    nthreads = 64
    chunk = (nreads + nthreads - 1) // nthreads
    for c in prange(nthreads):
        md_buf = np.empty(4 * 4096 + 64, np.uint8)
        dummy = np.empty(0, np.uint8)
        for r in range(c * chunk, min(nreads, (c + 1) * chunk)):
            if select[r]:
                sizes[r] = _encode_one(r, aln, names, noff, seq, qual, roff, cig, cstride, paired, ref, refoff,
                                       rg, dummy, 0, md_buf, False)
            else:
                sizes[r] = 0
    offs = np.empty(nreads + 1, np.int64)
    offs[0] = 0
    for r in range(nreads):
        offs[r + 1] = offs[r] + sizes[r]
    out = np.empty(offs[nreads], np.uint8)
    for c in prange(nthreads):
        md_buf = np.empty(4 * 4096 + 64, np.uint8)
        for r in range(c * chunk, min(nreads, (c + 1) * chunk)):
            if select[r]:
                _encode_one(r, aln, names, noff, seq, qual, roff, cig, cstride, paired, ref, refoff, rg, out,
                            offs[r], md_buf, True)
    return out


def header_text(names, lengths, m5s, rg_line=None, pg_line=None):
    lines = ["@HD\tVN:1.6\tSO:unsorted\tGO:query"]
    for nm, ln, m5 in zip(names, lengths, m5s):
        lines.append(f"@SQ\tSN:{nm}\tLN:{int(ln)}" + (f"\tM5:{m5}" if m5 else ""))
    if rg_line:
        lines.append(rg_line)
    if pg_line:
        lines.append(pg_line)
    return "\n".join(lines) + "\n"


def header_bytes(text, names, lengths):
    """The binary BAM header (magic, text, reference dictionary)."""
    t = text.encode()
    parts = [b"BAM\x01", np.int32(len(t)).tobytes(), t, np.int32(len(names)).tobytes()]
    for nm, ln in zip(names, lengths):
        b = nm.encode() + b"\x00"
        parts += [np.int32(len(b)).tobytes(), b, np.int32(int(ln)).tobytes()]
    return b"".join(parts)


class BamWriter:
    """BGZF-compressed BAM files written by a child process (kernels.bgzf_sink).

    `open(path, header)`, then `write(data)` any number of times (returns at once: a thread
    feeds the pipe), `close_file()`; `close()` waits until everything is on disk (closing what is
    still open) and raises if the child failed. Several files may be open at once, `select(path)`
    chooses the one `write` goes to (per-region part files)."""

    def __init__(self, level=1):
        self.proc = subprocess.Popen([sys.executable, "-m", "kernels.bgzf_sink", str(int(level))],
                                     stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.q = queue.Queue(maxsize=3)
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        pipe = self.proc.stdin
        while True:
            item = self.q.get()
            if item is None:
                break
            if self.error is not None:
                continue
            try:
                for part in item:
                    pipe.write(part)      # a blocking pipe write releases the GIL
            except OSError as e:
                self.error = e
        try:
            pipe.close()
        except OSError as e:
            self.error = self.error or e

    def _send(self, *parts):
        if self.error:
            raise self._failure()
        self.q.put(parts)

    def open(self, path, header):
        """Start a new file (it becomes the current one) with this header."""
        p = path.encode()
        self._send(b"F" + struct.pack("<I", len(p)) + p)
        self.write(header)

    def open_grouped(self, path, header, ngroups):
        """Start a part file (kernels.parts) with this header; write_group adds runs of records."""
        p = path.encode()
        self._send(b"P" + struct.pack("<I", len(p)) + p + struct.pack("<I", ngroups))
        self.write(header)

    def write_group(self, group, nrecords, data):
        mv = memoryview(data).cast("B")
        self._send(b"G" + struct.pack("<IIQ", group, nrecords, len(mv)), mv)

    def select(self, path):
        """Make an open file the current one."""
        p = path.encode()
        self._send(b"S" + struct.pack("<I", len(p)) + p)

    def write(self, data):
        mv = memoryview(data).cast("B")
        self._send(b"D" + struct.pack("<Q", len(mv)), mv)

    def close_file(self):
        self._send(b"C")

    def _failure(self):
        err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.poll() is not None else ""
        return OSError(f"writing the BAM failed: {err or self.error}")

    def close(self):
        self.q.put(None)
        self.t.join()
        rc = self.proc.wait()
        if rc != 0 or self.error:
            raise self._failure()
        self.proc.stderr.close()

    def abort(self):
        """Stop without finishing (the caller removes the temporary files)."""
        self.error = self.error or OSError("aborted")
        self.q.put(None)
        self.t.join()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class BgzipWriter(BamWriter):
    """One plain BAM file compressed by htslib's `bgzip` in a child process, with the interface of
    BamWriter for one file (open, write, close, abort). Debian's bgzip is built with libdeflate:
    at level 5 it compresses a BAM 2.6x as fast as pysam's zlib at level 6, to the same size
    (BENCHMARKS.md). for_plain_bam() picks it when bgzip is installed."""

    def __init__(self, level=5):
        self.level = int(level)
        self.q = queue.Queue(maxsize=3)
        self.error = None
        self.proc = self.t = self.out = None

    def open(self, path, header):
        if self.proc is not None:
            raise ValueError("a BgzipWriter writes one file")
        self.out = open(path, "wb")
        self.proc = subprocess.Popen(["bgzip", "-l", str(self.level), "-c"], stdin=subprocess.PIPE,
                                     stdout=self.out, stderr=subprocess.PIPE)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        self.write(header)

    def write(self, data):
        self._send(memoryview(data).cast("B"))

    def close_file(self):
        pass

    def close(self):
        try:
            if self.proc is not None:
                super().close()
        finally:
            if self.out:
                self.out.close()

    def abort(self):
        try:
            if self.proc is not None:
                super().abort()
        finally:
            if self.out:
                self.out.close()


def for_plain_bam(level=6):
    """A writer of one plain BAM at about zlib's `level` size: bgzip (libdeflate) when installed,
    one level lower (libdeflate's 5 gives zlib's 6's size), else the pysam writer."""
    import shutil
    if level > 0 and shutil.which("bgzip"):
        return BgzipWriter(max(1, level - 1))
    return BamWriter(level)


# ---------------------------------------------------------------- slow twin (pysam)

BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def concat_records(out_path, header, parts, level=1):
    """Write the BAM out_path: `header` (BAM header bytes), then the records of `parts`, BGZF
    files of records written without a header (BamWriter.open(path, b"")), in order. BGZF files
    concatenate (samtools cat relies on it): each part's blocks but its end-of-file block are
    copied as they are, in the kernel where it can (copy_file_range), never recompressed."""
    with pysam.libcbgzf.BGZFile(out_path, f"wb{level}") as f:
        f.write(header)
    fd = os.open(out_path, os.O_RDWR)
    try:
        end = _body_size(fd, out_path)
        os.lseek(fd, end, os.SEEK_SET)
        os.ftruncate(fd, end)
        for part in parts:
            src = os.open(part, os.O_RDONLY)
            try:
                _copy(src, fd, _body_size(src, part))
            finally:
                os.close(src)
        os.write(fd, BGZF_EOF)
    finally:
        os.close(fd)


def _body_size(fd, path):
    """Size of a BGZF file without its end-of-file block (which must be there: the file is whole)."""
    size = os.fstat(fd).st_size
    if size < len(BGZF_EOF) or os.pread(fd, len(BGZF_EOF), size - len(BGZF_EOF)) != BGZF_EOF:
        raise OSError(f"{path}: BGZF file without its end-of-file block (not completely written)")
    return size - len(BGZF_EOF)


def _copy(src, dst, n):
    copy_range(src, dst, 0, n)


def copy_range(src, dst, start, n):
    """n bytes of file src from offset start to dst's current position, in the kernel where it can."""
    off = 0
    while off < n:
        try:
            k = os.copy_file_range(src, dst, n - off, start + off)
        except OSError:                       # a filesystem without it: read and write
            k = os.write(dst, os.pread(src, min(n - off, 8 << 20), start + off))
        if k == 0:
            raise OSError("the part file shrank while it was being copied")
        off += k


def encode_slow(aln, names, noff, seq, qual, roff, cig, cstride, paired, ref, refoff, header_txt, rg_id, select):
    """The same records built with pysam.AlignedSegment; returns their bytes as BAM stores them."""
    import os
    import tempfile
    hdr = pysam.AlignmentHeader.from_text(header_txt)
    fd, tmp = tempfile.mkstemp(suffix=".bam")
    os.close(fd)
    try:
        with pysam.AlignmentFile(tmp, "wbu", header=hdr) as out:
            for r in range(len(aln)):
                if not select[r]:
                    continue
                a = aln[r]
                pair, L = (r >> 1 if paired else r), int(roff[r + 1] - roff[r])
                s = pysam.AlignedSegment(hdr)
                s.query_name = names[noff[pair]:noff[pair + 1]].tobytes().decode()
                s.flag = int(a["flag"])
                s.reference_id = int(a["tid"])
                s.reference_start = int(a["pos"])
                s.mapping_quality = int(a["mapq"])
                cg = [(int(c) & 15, int(c) >> 4) for c in cig[r * cstride: r * cstride + int(a["ncig"])]]
                s.cigartuples = cg or None
                q = seq[roff[r]:roff[r + 1]]
                qq = qual[roff[r]:roff[r + 1]]
                if a["rev"]:
                    q = _COMP[q[::-1]]
                    qq = qq[::-1]
                s.query_sequence = _REFCHAR[q].tobytes().decode() if L else None
                s.query_qualities = pysam.qualitystring_to_array((qq + 33).tobytes().decode()) if L else None
                s.next_reference_id = int(a["mtid"])
                s.next_reference_start = int(a["mpos"])
                s.template_length = int(a["tlen"])
                tags = []
                if not a["flag"] & F_UNMAP:
                    md, nm = _md_slow(q, ref, int(refoff[a["tid"]] + a["pos"]), cg)
                    tags += [("NM", nm), ("MD", md)]
                if a["flag"] & F_PAIRED and not a["flag"] & F_MUNMAP:
                    m = r ^ 1
                    mc = cig[m * cstride: m * cstride + int(aln[m]["ncig"])]
                    tags.append(("MC", "".join(f"{int(c) >> 4}{'MIDNSHP=X'[int(c) & 15]}" for c in mc)))
                if a["flag"] & F_PAIRED:
                    mq = qual[roff[r ^ 1]:roff[(r ^ 1) + 1]]
                    tags.append(("ms", int(mq[mq >= 15].sum())))
                if not a["flag"] & F_UNMAP:
                    tags.append(("AS", int(a["score"])))
                    if a["sub"] >= 0:
                        tags.append(("XS", int(a["sub"])))
                if rg_id:
                    tags.append(("RG", rg_id))
                s.set_tags(tags)
                out.write(s)
        with pysam.libcbgzf.BGZFile(tmp, "rb") as f:
            raw = f.read()
    finally:
        os.unlink(tmp)
    # skip the header: magic, l_text, text, n_ref, references
    p = 4
    lt = int(np.frombuffer(raw[p:p + 4], np.int32)[0])
    p += 4 + lt
    nref = int(np.frombuffer(raw[p:p + 4], np.int32)[0])
    p += 4
    for _ in range(nref):
        ln = int(np.frombuffer(raw[p:p + 4], np.int32)[0])
        p += 4 + ln + 4
    return raw[p:]


def _md_slow(q, ref, rstart, cigar):
    md, nm, run, qi, ri = [], 0, 0, 0, rstart
    for op, ln in cigar:
        if op in (0, 7, 8):
            for u in range(ln):
                b, r = int(q[qi + u]), int(ref[ri + u])
                if b == r and b < 4:
                    run += 1
                else:
                    nm += 1
                    md.append(f"{run}{'ACGTN'[r]}")
                    run = 0
            qi += ln
            ri += ln
        elif op == 1:
            nm += ln
            qi += ln
        elif op == 2:
            nm += ln
            md.append(f"{run}^" + "".join("ACGTN"[int(x)] for x in ref[ri:ri + ln]))
            run = 0
            ri += ln
        elif op == 4:
            qi += ln
    md.append(str(run))
    return "".join(md), nm
