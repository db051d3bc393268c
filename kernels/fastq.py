"""FASTQ input: two files read in step (pairs) or one (single-end), checked, cut into batches.

A thread per file decompresses (gzip, bgzip or plain; ISA-L's inflate, about 3x zlib's) into blocks
while the aligner works; numba
scans the blocks for records. Everything a user can get wrong is reported with the file, the
record number and what to do: a truncated gzip stream, a file that ends mid-record, a header
that is not '@...', a missing '+' line, sequence and quality of different lengths, a character
that is not a base or a quality, R1 and R2 with different read counts or mismatched names, and
an empty file, a read name longer than BAM allows (254 bytes), qualities that are Phred+64
(older Illumina and some archives; refused unless phred64=True converts them).

ReadBatch (one batch; paired: read 2i is mate 1 of pair i, read 2i+1 its mate 2):
    first     index of the batch's first pair (or read) in the files (0-based)
    n         number of pairs (single-end: of reads)
    paired    True for pairs
    names     uint8[]    read names (without a trailing /1 or /2), one per pair (or read), end to end
    noff      int64[n+1] name i is names[noff[i]:noff[i+1]]
    seq       uint8[]    base codes (kernels.dna) of all reads, end to end
    qual      uint8[]    Phred qualities (FASTQ character - 33, or - 64 with phred64)
    roff      int64[nreads+1] read r is seq[roff[r]:roff[r+1]]; nreads = 2n paired, n single-end
"""
import gzip
import os
import queue
import threading
import zlib
from dataclasses import dataclass

import numpy as np
from isal import igzip, isal_zlib

from kernels._numba import jit
from kernels.dna import ENCODE
from kernels.errors import InputError
from kernels.seed import MAX_READ_LEN
from kernels.types import MAX_NAME

BLOCK = 1 << 20
# guided batch sizes: once less than TAPER full batches are left, a batch is a TAPER-th of what is
# left (but at least 1/MIN_PART of a full batch), so that MPI ranks run out of work together
TAPER, MIN_PART = 4, 8
# scan_records error codes
E_OK, E_HEADER, E_PLUS, E_QLEN, E_TRUNC, E_LONG = 0, 1, 2, 3, 4, 5
# fill_batch error codes
F_OK, F_NAME, F_BASE, F_QUAL, F_LONGNAME = 0, 1, 2, 3, 4
# qualities: Phred+33 characters from '!'; a file whose lowest quality character is at least '@'
# and whose highest is beyond 'J' (Q41, the top of Phred+33 short-read instruments) is Phred+64
P64_MIN, P33_TOP = 64, 74


@dataclass
class ReadBatch:
    first: int
    n: int
    names: np.ndarray
    noff: np.ndarray
    seq: np.ndarray
    qual: np.ndarray
    roff: np.ndarray
    paired: bool = True

    @property
    def nreads(self):
        return 2 * self.n if self.paired else self.n

    def name(self, i):
        return self.names[self.noff[i]:self.noff[i + 1]].tobytes().decode(errors="replace")


@jit
def _line_end(buf, p, n):
    while p < n and buf[p] != 10:
        p += 1
    return p


@jit
def scan_records(buf, n, max_recs, at_eof, recs):
    """Find up to max_recs complete records in buf[:n]. recs: int64[max_recs, 5] gets
    (name_start, name_end, seq_start, seq_len, qual_start). Returns (count, consumed, error):
    without an error, consumed is where the first incomplete record starts."""
    p = 0
    c = 0
    while c < max_recs:
        # skip blank lines between records
        while p < n and (buf[p] == 10 or buf[p] == 13):
            p += 1
        if p >= n:
            return c, p, E_OK
        start = p
        if buf[p] != 64:  # '@'
            return c, p, E_HEADER
        e1 = _line_end(buf, p, n)
        if e1 >= n:
            return c, start, E_TRUNC if at_eof else E_OK
        ns = p + 1
        ne = ns
        while ne < e1 and buf[ne] != 32 and buf[ne] != 9 and buf[ne] != 13:
            ne += 1
        if ne - ns >= 2 and buf[ne - 2] == 47 and (buf[ne - 1] == 49 or buf[ne - 1] == 50):  # /1 /2
            ne -= 2
        s = e1 + 1
        e2 = _line_end(buf, s, n)
        if e2 >= n:
            return c, start, E_TRUNC if at_eof else E_OK
        slen = e2 - s
        if slen > 0 and buf[e2 - 1] == 13:
            slen -= 1
        p3 = e2 + 1
        e3 = _line_end(buf, p3, n)
        if e3 >= n:
            return c, start, E_TRUNC if at_eof else E_OK
        if buf[p3] != 43:  # '+'
            return c, start, E_PLUS
        qs = e3 + 1
        e4 = _line_end(buf, qs, n)
        if e4 >= n and not at_eof:
            return c, start, E_OK
        qlen = e4 - qs
        if qlen > 0 and buf[e4 - 1] == 13:
            qlen -= 1
        if qlen != slen:
            if e4 >= n and qlen < slen:
                return c, start, E_TRUNC
            return c, start, E_QLEN
        if slen > MAX_READ_LEN:
            return c, start, E_LONG
        recs[c, 0] = ns
        recs[c, 1] = ne
        recs[c, 2] = s
        recs[c, 3] = slen
        recs[c, 4] = qs
        c += 1
        p = e4 + 1
    return c, p, E_OK


@jit
def fill_batch(bufs, recs, nfiles, n, enc, qoff, names, noff, seq, qual, roff):
    """Copy n pairs (nfiles = 2: record i of file 1 and of file 2) or n reads (nfiles = 1) into
    batch arrays (sized by the caller). qoff: 33 (Phred+33) or 64. Returns (error, record, mate,
    lowest quality character, highest quality character)."""
    np_ = 0
    ps = 0
    noff[0] = 0
    roff[0] = 0
    qlo = np.int64(255)
    qhi = np.int64(0)
    buf1 = bufs[0]
    rec1 = recs[0]
    for i in range(n):
        a0 = rec1[i, 0]
        a1 = rec1[i, 1]
        if a1 - a0 > 254:
            return F_LONGNAME, i, 0, qlo, qhi
        if nfiles == 2:
            b0 = recs[1][i, 0]
            b1 = recs[1][i, 1]
            if a1 - a0 != b1 - b0:
                return F_NAME, i, 0, qlo, qhi
            for t in range(a1 - a0):
                if buf1[a0 + t] != bufs[1][b0 + t]:
                    return F_NAME, i, 0, qlo, qhi
        for t in range(a1 - a0):
            names[np_ + t] = buf1[a0 + t]
        np_ += a1 - a0
        noff[i + 1] = np_
        for mate in range(nfiles):
            buf = bufs[mate]
            rc = recs[mate]
            s = rc[i, 2]
            L = rc[i, 3]
            qs = rc[i, 4]
            for t in range(L):
                c = enc[buf[s + t]]
                if c == 255:
                    return F_BASE, i, mate, qlo, qhi
                seq[ps + t] = c
                qv = np.int64(buf[qs + t])
                if qv < qoff or qv > 126:
                    return F_QUAL, i, mate, qlo, qhi
                if qv < qlo:
                    qlo = qv
                if qv > qhi:
                    qhi = qv
                qual[ps + t] = qv - qoff
            ps += L
            roff[nfiles * i + mate + 1] = ps
    return F_OK, 0, 0, qlo, qhi


class _Blocks(threading.Thread):
    """Reads a file (decompressing gzip) in blocks into a bounded queue; errors go into the queue."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.q = queue.Queue(maxsize=3)
        self.stop = False
        try:
            with open(path, "rb") as f:
                self.gz = f.read(2) == b"\x1f\x8b"
                st = os.fstat(f.fileno())
            # the size of a regular file tells how much is left to read (None: a pipe)
            self.size = st.st_size if (st.st_mode & 0o170000) == 0o100000 else None
        except FileNotFoundError:
            raise InputError(f"{path}: no such FASTQ file") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory, expected a FASTQ file") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read FASTQ file: {e.strerror}") from None

    def run(self):
        try:
            raw = _Chunked(open(self.path, "rb"))
            f = igzip.open(raw, "rb") if self.gz else raw
            with raw, f:
                while not self.stop:
                    b = f.read(BLOCK)
                    self.q.put((b, raw.tell()))     # with how far into the file it comes from
                    if not b:
                        return
        except EOFError:
            self.q.put(InputError(f"{self.path}: truncated gzip file (the compressed stream ends early); "
                                  f"copy or download it again"))
        except (gzip.BadGzipFile, igzip.BadGzipFile, zlib.error, isal_zlib.error) as e:
            self.q.put(InputError(f"{self.path}: corrupt gzip data ({e}); copy or download it again"))
        except OSError as e:
            self.q.put(InputError(f"{self.path}: read error: {e}"))

    def get(self):
        item = self.q.get()
        if isinstance(item, Exception):
            raise item
        return item


class _Chunked:
    """A file read CHUNK bytes at most per call, so that tell() follows the decompressor closely
    (ISA-L's gzip reader would read ahead 512 KiB at a time: too coarse to tell what is left)."""

    CHUNK = 64 << 10

    def __init__(self, f):
        self.f = f
        self.mode = "rb"
        self.name = f.name

    def read(self, n=-1):
        return self.f.read(self.CHUNK if n is None or n < 0 or n > self.CHUNK else n)

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def tell(self):
        return self.f.tell()

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Stream:
    """Records of one FASTQ file, `take(n)` at a time. Blocks are appended into one buffer that
    grows by doubling and is compacted (the unread tail moved to the front) only when full."""

    def __init__(self, path):
        self.path = path
        self.blocks = _Blocks(path)
        self.blocks.start()
        self.buf = np.empty(4 * BLOCK, np.uint8)
        self.start = 0          # first unread byte
        self.end = 0            # one past the last byte read
        self.eof = False
        self.count = 0          # records handed out so far
        self.recs = np.empty((0, 5), np.int64)
        self.appended = 0       # bytes (decompressed) appended so far ...
        self.filepos = 0        # ... from this many bytes of the file

    def close(self):
        self.blocks.stop = True
        try:                     # unblock the reader thread if it waits on a full queue
            while True:
                self.blocks.q.get_nowait()
        except queue.Empty:
            pass

    def _append(self, block):
        n = len(block)
        if self.end + n > len(self.buf):
            live = self.end - self.start
            if live + n > len(self.buf):
                grown = np.empty(max(2 * len(self.buf), live + n), np.uint8)
                grown[:live] = self.buf[self.start:self.end]
                self.buf = grown
            else:
                self.buf[:live] = self.buf[self.start:self.end]
            self.start, self.end = 0, live
        self.buf[self.end:self.end + n] = np.frombuffer(block, np.uint8)
        self.end += n

    def take(self, n):
        """Up to n records: (buf, recs, count); positions in recs are relative to buf, which stays
        valid until the next call."""
        if self.recs.shape[0] < n:
            self.recs = np.empty((n, 5), np.int64)
        while True:
            view = self.buf[self.start:self.end]
            cnt, used, err = scan_records(view, len(view), n, self.eof, self.recs)
            if err != E_OK:
                self._raise(err, self.count + cnt)
            if cnt == n or self.eof:
                if self.eof and cnt < n and used < len(view):
                    self._raise(E_TRUNC, self.count + cnt)
                self.start += used
                self.count += cnt
                return view, self.recs, cnt
            block, self.filepos = self.blocks.get()
            if not block:
                self.eof = True
            else:
                self._append(block)
                self.appended += len(block)

    def records_left(self):
        """Estimated number of records not handed out yet (None when it cannot be told: nothing
        handed out yet, or not a regular file). It depends only on the file and what was taken."""
        size = self.blocks.size
        if size is None or self.count == 0 or self.filepos == 0:
            return None
        buffered = self.end - self.start
        per_record = (self.appended - buffered) / self.count
        if self.eof:
            return buffered / per_record
        return (buffered + max(size - self.filepos, 0) * self.appended / self.filepos) / per_record
    def _raise(self, err, rec):
        where = f"{self.path}: record {rec + 1} (line {4 * rec + 1})"
        msg = {
            E_HEADER: "does not start with '@': not a FASTQ record (is the file FASTQ, and not cut mid-record?)",
            E_PLUS: "has no '+' separator line where one is expected",
            E_QLEN: "has a quality string of a different length than its sequence",
            E_TRUNC: "is incomplete: the file ends in the middle of a record (truncated file?)",
            E_LONG: f"is longer than {MAX_READ_LEN} bases: this aligner is for short reads",
        }[err]
        raise InputError(f"{where} {msg}")


class FastqReader:
    """Iterate over ReadBatch objects of `batch` pairs from R1 and R2, or of `batch` reads from one
    FASTQ (r2=None: single-end). With guided=True the last few batches of a regular file are
    smaller (see TAPER): the same whoever reads them, so that the batches, and the records, do not
    depend on how many MPI ranks share them. phred64: the qualities are Phred+64 (converted);
    without it a file that looks Phred+64 is refused."""

    def __init__(self, r1, r2=None, batch=10000, guided=False, phred64=False):
        self.r1, self.r2, self.batch, self.guided = r1, r2, batch, guided
        self.paired = r2 is not None
        self.qoff = 64 if phred64 else 33
        self.streams = [_Stream(r1)] + ([_Stream(r2)] if self.paired else [])
        self.qlo = [255] * len(self.streams)
        self.qhi = [0] * len(self.streams)

    @property
    def paths(self):
        return [self.r1, self.r2] if self.paired else [self.r1]

    def close(self):
        for s in self.streams:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        for _, batch in self.batches():
            yield batch

    def batches(self):
        """(number, ReadBatch) for every batch, in order."""
        first = 0
        number = 0
        while True:
            want = self._next_size()
            got = [s.take(want) for s in self.streams]
            counts = [g[2] for g in got]
            if self.paired and counts[0] != counts[1]:
                n1, n2 = counts
                short, longer = (self.r1, self.r2) if n1 < n2 else (self.r2, self.r1)
                raise InputError(f"{short} ends after {first + min(n1, n2)} reads but {longer} has more: "
                                 f"R1 and R2 must hold the same reads in the same order")
            n = counts[0]
            if n == 0:
                if first == 0:
                    what = f"{self.r1} and {self.r2}" if self.paired else self.r1
                    raise InputError(f"{what}: no reads (empty FASTQ file{'s' if self.paired else ''})")
                return
            yield number, self._fill(got, n, first)
            first += n
            number += 1
            if n < want:
                if self.paired:
                    # the files ended inside this take(); make sure both really are at their end
                    m1, m2 = (s.take(1)[2] for s in self.streams)
                    if m1 or m2:
                        longer = self.r1 if m1 else self.r2
                        raise InputError(f"{longer} has more reads than its mate file (> {first}): "
                                         f"R1 and R2 must hold the same reads in the same order")
                return

    def _next_size(self):
        left = self.streams[0].records_left() if self.guided else None
        if left is None:
            return self.batch
        return int(min(self.batch, max(self.batch // MIN_PART, left // TAPER, 1)))

    def _fill(self, got, n, first):
        bufs = tuple(g[0] for g in got)
        recs = tuple(g[1] for g in got)
        nf = len(got)
        nlen = int((recs[0][:n, 1] - recs[0][:n, 0]).sum())
        slen = int(sum(r[:n, 3].sum() for r in recs))
        names = np.empty(nlen, np.uint8)
        noff = np.empty(n + 1, np.int64)
        seq = np.empty(slen, np.uint8)
        qual = np.empty(slen, np.uint8)
        roff = np.empty(nf * n + 1, np.int64)
        if nf == 1:
            bufs, recs = bufs * 2, recs * 2
        err, i, mate, qlo, qhi = fill_batch(bufs, recs, nf, n, ENCODE, self.qoff, names, noff, seq, qual, roff)
        if err != F_OK:
            self._error(err, i, mate, bufs, recs, first)
        self._check_encoding(qlo, qhi)
        return ReadBatch(first, n, names, noff, seq, qual, roff, self.paired)

    def _check_encoding(self, qlo, qhi):
        """Refuse Phred+64 qualities read as Phred+33 (they would all look like Q31 and above)."""
        if self.qoff != 33:
            return
        self.qlo[0] = min(self.qlo[0], int(qlo))
        self.qhi[0] = max(self.qhi[0], int(qhi))
        if self.qlo[0] >= P64_MIN and self.qhi[0] > P33_TOP:
            raise InputError(f"{self.r1}: the qualities look Phred+64, not Phred+33: the lowest quality character "
                             f"so far is {chr(self.qlo[0])!r} and the highest {chr(self.qhi[0])!r} (Q{self.qhi[0] - 33} "
                             f"in Phred+33, more than any Illumina instrument writes). Give --phred64 to convert "
                             f"them, or convert the files first (`seqtk seq -Q64 -V`)")

    def _error(self, err, i, mate, bufs, recs, first):
        """Raise the InputError for a fill_batch error code."""
        rec = first + i
        if err == F_NAME:
            n1 = bufs[0][recs[0][i, 0]:recs[0][i, 1]].tobytes().decode(errors="replace")
            n2 = bufs[1][recs[1][i, 0]:recs[1][i, 1]].tobytes().decode(errors="replace")
            raise InputError(f"read {rec + 1}: names differ between {self.r1} ({n1!r}) and {self.r2} ({n2!r}): "
                             f"R1 and R2 must hold the same reads in the same order")
        path = self.paths[mate]
        if err == F_LONGNAME:
            ln = int(recs[0][i, 1] - recs[0][i, 0])
            raise InputError(f"{path}: record {rec + 1} (line {4 * rec + 1}): the read name is {ln} bytes long; "
                             f"BAM holds at most {MAX_NAME}. Shorten the names (e.g. keep the part before the "
                             f"first space or colon-separated instrument fields)")
        if err == F_BASE:
            what = "sequence has a character that is not a base"
        elif self.qoff == 64:
            what = ("quality has a character below '@': not Phred+64 (drop --phred64 if the file is Phred+33)")
        else:
            what = "quality has a character outside '!'..'~'"
        raise InputError(f"{path}: record {rec + 1} (line {4 * rec + 1}): {what}")


class PairedReader(FastqReader):
    """FastqReader of two files (R1, R2): batches of pairs."""

    def __init__(self, r1, r2, batch=10000, guided=False, phred64=False):
        super().__init__(r1, r2, batch, guided, phred64)


# ---------------------------------------------------------------- slow twin (plain Python)

def read_records_slow(path, qoff=33):
    """All records of one FASTQ as [(name, seq, qual)] with plain Python parsing (no checks)."""
    op = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with op(path, "rb") as f:
        lines = [ln.rstrip(b"\r\n") for ln in f if ln.strip()]
    out = []
    for i in range(0, len(lines), 4):
        name = lines[i][1:].split()[0]
        if name.endswith((b"/1", b"/2")):
            name = name[:-2]
        out.append((name, lines[i + 1], bytes(c - qoff for c in lines[i + 3])))
    return out


def read_pairs_slow(r1, r2):
    """All pairs as [(name, seq1, qual1, seq2, qual2)] with plain Python parsing (no checks)."""
    def records(path):
        op = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
        with op(path, "rb") as f:
            lines = [ln.rstrip(b"\r\n") for ln in f if ln.strip()]
        for i in range(0, len(lines), 4):
            name = lines[i][1:].split()[0]
            if name.endswith((b"/1", b"/2")):
                name = name[:-2]
            yield name, lines[i + 1], bytes(c - 33 for c in lines[i + 3])
    return [(a[0], a[1], a[2], b[1], b[2]) for a, b in zip(records(r1), records(r2))]
