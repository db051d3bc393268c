"""Paired FASTQ input: two files read in step, checked, cut into batches of read pairs.

A thread per file decompresses (gzip, bgzip or plain; ISA-L's inflate, about 3x zlib's) into blocks
while the aligner works; numba
scans the blocks for records. Everything a user can get wrong is reported with the file, the
record number and what to do: a truncated gzip stream, a file that ends mid-record, a header
that is not '@...', a missing '+' line, sequence and quality of different lengths, a character
that is not a base or a quality, R1 and R2 with different read counts or mismatched names, and
an empty file.

ReadBatch (one batch of pairs; read 2i is mate 1 of pair i, read 2i+1 its mate 2):
    first     index of the batch's first pair in the files (0-based)
    n         number of pairs
    names     uint8[]    read names (without a trailing /1 or /2), one per pair, end to end
    noff      int64[n+1] pair i's name is names[noff[i]:noff[i+1]]
    seq       uint8[]    base codes (kernels.dna) of all reads, end to end
    qual      uint8[]    Phred qualities (FASTQ character - 33)
    roff      int64[2n+1] read r is seq[roff[r]:roff[r+1]]
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

BLOCK = 1 << 20
# guided batch sizes: once less than TAPER full batches are left, a batch is a TAPER-th of what is
# left (but at least 1/MIN_PART of a full batch), so that MPI ranks run out of work together
TAPER, MIN_PART = 4, 8
# scan_records error codes
E_OK, E_HEADER, E_PLUS, E_QLEN, E_TRUNC, E_LONG = 0, 1, 2, 3, 4, 5
# fill_batch error codes
F_OK, F_NAME, F_BASE, F_QUAL = 0, 1, 2, 3


@dataclass
class ReadBatch:
    first: int
    n: int
    names: np.ndarray
    noff: np.ndarray
    seq: np.ndarray
    qual: np.ndarray
    roff: np.ndarray

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
def fill_batch(buf1, recs1, buf2, recs2, n, enc, names, noff, seq, qual, roff):
    """Copy n pairs into batch arrays (sized by the caller). Returns (error, pair, mate)."""
    np_ = 0
    ps = 0
    noff[0] = 0
    roff[0] = 0
    for i in range(n):
        a0 = recs1[i, 0]
        a1 = recs1[i, 1]
        b0 = recs2[i, 0]
        b1 = recs2[i, 1]
        if a1 - a0 != b1 - b0:
            return F_NAME, i, 0
        for t in range(a1 - a0):
            if buf1[a0 + t] != buf2[b0 + t]:
                return F_NAME, i, 0
            names[np_ + t] = buf1[a0 + t]
        np_ += a1 - a0
        noff[i + 1] = np_
        for mate in range(2):
            buf = buf1 if mate == 0 else buf2
            recs = recs1 if mate == 0 else recs2
            s = recs[i, 2]
            L = recs[i, 3]
            qs = recs[i, 4]
            for t in range(L):
                c = enc[buf[s + t]]
                if c == 255:
                    return F_BASE, i, mate
                seq[ps + t] = c
                qv = buf[qs + t]
                if qv < 33 or qv > 126:
                    return F_QUAL, i, mate
                qual[ps + t] = qv - 33
            ps += L
            roff[2 * i + mate + 1] = ps
    return F_OK, 0, 0


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


class PairedReader:
    """Iterate over ReadBatch objects of `batch` pairs from R1 and R2. With guided=True the last
    few batches of a regular file are smaller (see TAPER): the same whoever reads them, so that
    the batches, and the records, do not depend on how many MPI ranks share them."""

    def __init__(self, r1, r2, batch=10000, guided=False):
        self.r1, self.r2, self.batch, self.guided = r1, r2, batch, guided
        self.s1 = _Stream(r1)
        self.s2 = _Stream(r2)

    def close(self):
        self.s1.close()
        self.s2.close()

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
            b1, rec1, n1 = self.s1.take(want)
            b2, rec2, n2 = self.s2.take(want)
            if n1 != n2:
                short, longer = (self.r1, self.r2) if n1 < n2 else (self.r2, self.r1)
                raise InputError(f"{short} ends after {first + min(n1, n2)} reads but {longer} has more: "
                                 f"R1 and R2 must hold the same reads in the same order")
            if n1 == 0:
                if first == 0:
                    raise InputError(f"{self.r1} and {self.r2}: no reads (empty FASTQ files)")
                return
            yield number, self._fill(b1, rec1, b2, rec2, n1, first)
            first += n1
            number += 1
            if n1 < want:
                # the files ended inside this take(); make sure both really are at their end
                _, _, m1 = self.s1.take(1)
                _, _, m2 = self.s2.take(1)
                if m1 or m2:
                    longer = self.r1 if m1 else self.r2
                    raise InputError(f"{longer} has more reads than its mate file (> {first}): "
                                     f"R1 and R2 must hold the same reads in the same order")
                return

    def _next_size(self):
        left = self.s1.records_left() if self.guided else None
        if left is None:
            return self.batch
        return int(min(self.batch, max(self.batch // MIN_PART, left // TAPER, 1)))

    def _fill(self, b1, rec1, b2, rec2, n, first):
        nlen = int((rec1[:n, 1] - rec1[:n, 0]).sum())
        slen = int(rec1[:n, 3].sum() + rec2[:n, 3].sum())
        names = np.empty(nlen, np.uint8)
        noff = np.empty(n + 1, np.int64)
        seq = np.empty(slen, np.uint8)
        qual = np.empty(slen, np.uint8)
        roff = np.empty(2 * n + 1, np.int64)
        err, i, mate = fill_batch(b1, rec1, b2, rec2, n, ENCODE, names, noff, seq, qual, roff)
        if err != F_OK:
            self._error(err, i, mate, b1, rec1, b2, rec2, first)
        return ReadBatch(first, n, names, noff, seq, qual, roff)

    def _error(self, err, i, mate, b1, rec1, b2, rec2, first):
        """Raise the InputError for a fill_batch error code."""
        rec = first + i
        if err == F_NAME:
            n1 = b1[rec1[i, 0]:rec1[i, 1]].tobytes().decode(errors="replace")
            n2 = b2[rec2[i, 0]:rec2[i, 1]].tobytes().decode(errors="replace")
            raise InputError(f"read {rec + 1}: names differ between {self.r1} ({n1!r}) and {self.r2} ({n2!r}): "
                             f"R1 and R2 must hold the same reads in the same order")
        path = self.r1 if mate == 0 else self.r2
        what = "sequence has a character that is not a base" if err == F_BASE else \
            "quality has a character outside '!'..'~'"
        raise InputError(f"{path}: record {rec + 1} (line {4 * rec + 1}): {what}")


# ---------------------------------------------------------------- slow twin (plain Python)

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
