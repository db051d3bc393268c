"""Reading BAM records into arrays: ISA-L inflates the BGZF stream, numba parses the records.

Iterating pysam.AlignedSegment objects costs microseconds of Python per record; the caller needs
a few fields of every record and the bases of many, so records are parsed by a numba kernel into
columns (`Reads`), and each record's raw bytes are kept for the sorted output BAM. The slow twin
(`read_slow`) gets the same columns through pysam; the tests require them to be equal.

Reads (one entry per record, in input order until sorted):
    raw, roff   record i starts at raw[roff[i]] (its block_size; the record is 4 + block_size bytes).
                Sorting permutes roff and the columns, never the bytes (raw may be read-only).
    tid, pos    contig index and 0-based leftmost position (-1: none)
    end         one past the last reference base covered (pos + 1 for a record without CIGAR)
    flag, mapq  SAM flag and mapping quality
    mtid, mpos  mate's contig and position
    ustart      unclipped start: position minus the leading soft/hard clips
    uend        unclipped end: one past the last covered base plus the trailing clips
    muc5        the mate's unclipped 5' end from MC and the mate fields; -1 if there is no MC
    score       sum of the record's base qualities >= 15;  ms  the mate's (ms tag), -1 if absent
    rg          index of its read group in the header's @RG list, -1 without an RG tag
    namehash    64-bit FNV-1a hash of the read name (a stable order and tie-break)
"""
from dataclasses import dataclass

import numpy as np
import pysam
from isal import igzip, isal_zlib

from kernels._numba import jit
from kernels.bamrec import i32 as _i32, u16 as _u16
from kernels.types import BAM_FIXED as _FIXED
from kernels.errors import InputError

# fields of the fixed part of a record, as offsets from its start (block_size included)
_O_REFID, _O_POS, _O_LNAME, _O_MAPQ, _O_NCIG, _O_FLAG, _O_LSEQ, _O_MREF, _O_MPOS, _O_TLEN = (
    4, 8, 12, 13, 16, 18, 20, 24, 28, 32)
@dataclass
class Reads:
    raw: np.ndarray
    roff: np.ndarray
    tid: np.ndarray
    pos: np.ndarray
    end: np.ndarray
    flag: np.ndarray
    mapq: np.ndarray
    mtid: np.ndarray
    mpos: np.ndarray
    ustart: np.ndarray
    uend: np.ndarray
    muc5: np.ndarray
    score: np.ndarray
    ms: np.ndarray
    rg: np.ndarray
    namehash: np.ndarray

    @property
    def n(self):
        return len(self.tid)

    COLUMNS = ("tid", "pos", "end", "flag", "mapq", "mtid", "mpos", "ustart", "uend", "muc5", "score", "ms", "rg",
               "namehash")

    @property
    def uc5(self):
        """Unclipped 5' end: the unclipped start of a forward read, the last unclipped base of a reverse one."""
        return np.where((self.flag & 16) != 0, self.uend - 1, self.ustart)

    def take(self, idx):
        """The records idx (an index array), in that order, as a new Reads sharing the bytes."""
        return Reads(self.raw, self.roff[idx], **{c: getattr(self, c)[idx] for c in self.COLUMNS})

    def compact(self):
        """The same records, their bytes copied end to end (the bytes of records not taken are let go)."""
        raw = self.record_bytes()
        b = self.raw
        r = self.roff
        ln = 4 + (b[r].astype(np.int64) | (b[r + 1].astype(np.int64) << 8) | (b[r + 2].astype(np.int64) << 16) |
                  (b[r + 3].astype(np.int64) << 24))
        roff = np.zeros(self.n, np.int64)
        np.cumsum(ln[:-1], out=roff[1:])
        return Reads(raw, roff, **{c: getattr(self, c) for c in self.COLUMNS})

    def record_bytes(self, a=0, b=None):
        """Records a..b end to end (their flag fields as in `flag`: duplicate marks included)."""
        b = self.n if b is None else b
        return _gather(self.raw, self.roff[a:b], self.flag[a:b])


@jit
def _gather(raw, starts, flags):
    n = starts.shape[0]
    size = 0
    for j in range(n):
        size += 4 + _i32(raw, starts[j])
    out = np.empty(size, np.uint8)
    p = 0
    for j in range(n):
        ln = 4 + _i32(raw, starts[j])
        out[p:p + ln] = raw[starts[j]:starts[j] + ln]
        out[p + 18] = flags[j] & 255
        out[p + 19] = flags[j] >> 8
        p += ln
    return out


@jit
def _tag_value_end(b, p, t):
    """Offset after the value of type t starting at p (or -1 for an unknown type)."""
    if t == 65 or t == 99 or t == 67:            # A c C
        return p + 1
    if t == 115 or t == 83:                      # s S
        return p + 2
    if t == 105 or t == 73 or t == 102:          # i I f
        return p + 4
    if t == 90 or t == 72:                       # Z H
        while b[p] != 0:
            p += 1
        return p + 1
    if t == 66:                                  # B
        sub = b[p]
        n = _i32(b, p + 1)
        size = 1 if (sub == 99 or sub == 67) else (2 if (sub == 115 or sub == 83) else 4)
        return p + 5 + n * size
    return -1


@jit
def _int_value(b, p, t):
    if t == 99:
        v = np.int64(b[p])
        return v - 256 if v >= 128 else v
    if t == 67:
        return np.int64(b[p])
    if t == 115:
        v = _u16(b, p)
        return v - 65536 if v >= 32768 else v
    if t == 83:
        return _u16(b, p)
    if t == 105:
        return _i32(b, p)
    if t == 73:
        return _i32(b, p) & 0xFFFFFFFF
    return np.int64(-1)


@jit
def scan_bam(buf, n, start, rg_ids, rg_off, cap, roff, tid, pos, end, flag, mapq, mtid, mpos, ustart, uend,
             muc5, score, ms, rg, namehash):
    """Parse complete records of buf[start:n] into the columns (at most cap). Returns
    (count, offset after the last parsed record, error): error 1 = a malformed record."""
    p = start
    c = 0
    while c < cap and p + 4 <= n:
        bs = _i32(buf, p)
        if bs < _FIXED - 4 or bs > (1 << 28):
            return c, p, 1
        if p + 4 + bs > n:
            break
        roff[c] = p
        t = _i32(buf, p + _O_REFID)
        ps = _i32(buf, p + _O_POS)
        lname = np.int64(buf[p + _O_LNAME])
        ncig = _u16(buf, p + _O_NCIG)
        fl = _u16(buf, p + _O_FLAG)
        lseq = _i32(buf, p + _O_LSEQ)
        tid[c] = t
        pos[c] = ps
        flag[c] = fl
        mapq[c] = buf[p + _O_MAPQ]
        mtid[c] = _i32(buf, p + _O_MREF)
        mpos[c] = _i32(buf, p + _O_MPOS)
        q = p + _FIXED
        h = np.uint64(14695981039346656037)
        for u in range(lname - 1):
            h = (h ^ np.uint64(buf[q + u])) * np.uint64(1099511628211)
        namehash[c] = h
        q += lname
        span = 0
        lclip = 0
        rclip = 0
        seen_m = False
        for u in range(ncig):
            op = buf[q] & 15
            ln = _i32(buf, q) >> 4
            if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
                span += ln
                seen_m = True
            elif op == 4 or op == 5:
                if seen_m:
                    rclip += ln
                else:
                    lclip += ln
            q += 4
        end[c] = ps + span if span > 0 else ps + 1
        ustart[c] = ps - lclip
        uend[c] = end[c] + rclip
        q += (lseq + 1) // 2
        sc = 0
        for u in range(lseq):
            v = buf[q + u]
            if v >= 15 and v != 255:
                sc += v
        score[c] = sc
        q += lseq
        # tags
        ms[c] = -1
        rg[c] = -1
        muc5[c] = -1
        stop = p + 4 + bs
        while q + 3 <= stop:
            k1 = buf[q]
            k2 = buf[q + 1]
            ty = buf[q + 2]
            v0 = q + 3
            v1 = _tag_value_end(buf, v0, ty)
            if v1 < 0 or v1 > stop:
                return c, p, 1
            if k1 == 109 and k2 == 115:                       # ms
                ms[c] = _int_value(buf, v0, ty)
            elif k1 == 82 and k2 == 71 and ty == 90:          # RG:Z
                ln = v1 - 1 - v0
                for g in range(rg_off.shape[0] - 1):
                    a = rg_off[g]
                    if rg_off[g + 1] - a == ln:
                        same = True
                        for u in range(ln):
                            if rg_ids[a + u] != buf[v0 + u]:
                                same = False
                                break
                        if same:
                            rg[c] = g
                            break
            elif k1 == 77 and k2 == 67 and ty == 90:          # MC:Z, the mate's CIGAR
                mspan = 0
                ml = 0
                mr = 0
                num = 0
                mseen = False
                for u in range(v0, v1 - 1):
                    ch = buf[u]
                    if ch >= 48 and ch <= 57:
                        num = num * 10 + (ch - 48)
                        continue
                    if ch == 77 or ch == 68 or ch == 78 or ch == 61 or ch == 88:    # M D N = X
                        mspan += num
                        mseen = True
                    elif ch == 83 or ch == 72:                                      # S H
                        if mseen:
                            mr += num
                        else:
                            ml += num
                    num = 0
                if fl & 32:
                    muc5[c] = mpos[c] + mspan + mr - 1
                else:
                    muc5[c] = mpos[c] - ml
            q = v1
        c += 1
        p += 4 + bs
    roff[c] = p
    return c, p, 0


def header_of(path):
    """The header of a BAM file as pysam's dict; InputError if it is not a readable BAM."""
    try:
        with pysam.AlignmentFile(path, "rb", check_sq=False) as f:
            return f.header.to_dict()
    except FileNotFoundError:
        raise InputError(f"{path}: no such BAM file") from None
    except NotImplementedError:
        raise InputError(f"{path}: gzip-compressed but not BGZF, so not a BAM file; rewrite it with "
                         f"`samtools view -b`") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable BAM file ({e})") from None


def read_bam(path, rg_ids=(), into=None):
    """All records of a BAM file as Reads (input order) plus its header dict. rg_ids lists the read
    group IDs whose index goes into `rg`. into: (buffer, offset, size): inflate the file into
    buffer[offset:offset + size] (size from bgzf_size); the Reads then point into that buffer."""
    hdr = header_of(path)
    try:
        # a BGZF file is a valid multi-member gzip stream: ISA-L inflates it about 2x faster than zlib
        if into is None:
            with igzip.open(path, "rb") as f:
                buf = np.frombuffer(f.read(), np.uint8)
            base, top = 0, len(buf)
        else:
            buf, base, size = into
            _inflate_into(path, buf, base, size)
            top = base + size
    except (OSError, EOFError, igzip.BadGzipFile, isal_zlib.error) as e:
        raise InputError(f"{path}: cannot read the BAM ({e}); is it truncated?") from None
    if top - base < 12 or bytes(buf[base:base + 4]) != b"BAM\x01":
        raise InputError(f"{path}: not a BAM file")
    p = base + 4
    p += 4 + _le32(buf, p)
    n_ref = _le32(buf, p)
    p += 4
    for _ in range(n_ref):
        p += 4 + _le32(buf, p) + 4
    return scan_records(buf, p, top, rg_ids, path), hdr


def scan_records(buf, start, top, rg_ids, path):
    """The records in buf[start:top] (BAM records end to end, no header) as Reads pointing into buf."""
    ids = [g.encode() for g in rg_ids]
    rg_arr = np.frombuffer(b"".join(ids), np.uint8) if ids else np.empty(0, np.uint8)
    rg_off = np.zeros(len(ids) + 1, np.int64)
    np.cumsum([len(x) for x in ids], out=rg_off[1:])
    chunks = []
    cap = max(1024, (top - start) // 300 + 16)      # about 300 bytes a record for 2x150 reads
    while True:
        cols = _alloc(cap)
        cnt, q, err = scan_bam(buf, top, start, rg_arr, rg_off, cap, *cols)
        if err:
            raise InputError(f"{path}: malformed BAM record after {sum(len(c[1]) for c in chunks) + cnt} records")
        chunks.append((cols[0][:cnt + 1], [c[:cnt] for c in cols[1:]]))
        start = q
        if q == top:
            break
        if cnt < cap:
            raise InputError(f"{path}: the BAM ends inside a record (truncated file?)")
    roff = np.concatenate([o[:-1] for o, _ in chunks])
    columns = [np.concatenate([c[i] for _, c in chunks]) for i in range(len(chunks[0][1]))]
    return Reads(buf, roff, *columns)


def read_parts(parts, groups, rg_ids=()):
    """The records of the given groups of part files (kernels.partfile.PartFile), inflated into
    one buffer: Reads in part order, then group order."""
    from kernels.partfile import inflate_runs
    runs = [p.runs(groups) for p in parts]
    buf = np.empty(int(sum(int(r[:, 2].sum()) for r in runs)), np.uint8)
    got, at = [], 0
    for p, r in zip(parts, runs):
        end = inflate_runs(p.path, r, buf, at)
        got.append(scan_records(buf, at, end, rg_ids, p.path) if end > at else None)
        at = end
    got = [g for g in got if g is not None]
    return concat(got) if got else scan_records(buf, 0, 0, rg_ids, "")


def read_bams(paths, rg_ids=(), spare=0):
    """[(Reads, header)] of several BAM files whose record bytes lie in one buffer, each file
    inflated straight into its place, so that concat() joins them without copying records (a
    whole sample's records are gigabytes). `spare` bytes are left free at the buffer's end for
    place(). Returns (that list, the buffer, the offset of the spare bytes). When a file's size
    cannot be read from BGZF block headers, every file is read the ordinary way (read_bam says
    what is wrong with a file that is no BAM; concat() then copies)."""
    sizes = [bgzf_size(p) for p in paths]
    if any(x is None for x in sizes):
        got = [read_bam(p, rg_ids) for p in paths]
        buf = np.empty(spare, np.uint8)
        return got, buf, 0
    buf = np.empty(sum(sizes) + spare, np.uint8)
    got, at = [], 0
    for p, size in zip(paths, sizes):
        got.append(read_bam(p, rg_ids, into=(buf, at, size)))
        at += size
    return got, buf, at


def place(reads, buf, at):
    """reads (compact: its raw holds exactly its records) copied into buf at offset `at`."""
    buf[at:at + len(reads.raw)] = reads.raw
    return Reads(buf, reads.roff + at, **{c: getattr(reads, c) for c in Reads.COLUMNS})


def bgzf_size(path):
    """The inflated size of a BGZF file (the sum of its blocks' ISIZE), read from the block
    headers only; None when the file is not BGZF throughout (or cannot be read)."""
    try:
        b = np.memmap(path, np.uint8, mode="r")
    except (OSError, ValueError):
        return None
    n, q, total = len(b), 0, 0
    while q < n:
        if q + 18 > n or b[q] != 31 or b[q + 1] != 139 or (b[q + 3] & 4) == 0:
            return None
        xlen = int(b[q + 10]) | (int(b[q + 11]) << 8)
        e, bsize = q + 12, None
        while e + 4 <= q + 12 + xlen:                  # the extra subfields: BC holds BSIZE
            slen = int(b[e + 2]) | (int(b[e + 3]) << 8)
            if b[e] == 66 and b[e + 1] == 67 and slen == 2:
                bsize = int(b[e + 4]) | (int(b[e + 5]) << 8)
            e += 4 + slen
        if bsize is None or q + bsize + 1 > n:
            return None
        q += bsize + 1
        total += _le32(b, q - 4) & 0xFFFFFFFF
    return total


def _inflate_into(path, buf, at, size, chunk=1 << 18):
    """Inflate a gzip file of `size` inflated bytes into buf[at:at + size], in chunks small enough
    for the allocator to reuse (a big temporary would be fresh pages every time)."""
    mv = memoryview(buf)
    p, end = at, at + size
    with igzip.open(path, "rb") as f:
        while p < end:
            k = f.readinto(mv[p:min(end, p + chunk)])
            if not k:
                raise OSError(f"it inflates to {p - at} bytes, its BGZF blocks say {size}")
            p += k
        if f.read(1):
            raise OSError(f"it inflates to more than the {size} bytes its BGZF blocks say")


def _le32(b, p):
    return int(np.frombuffer(bytes(b[p:p + 4]), "<i4")[0])


def _alloc(cap):
    return (np.empty(cap + 1, np.int64), np.empty(cap, np.int32), np.empty(cap, np.int64), np.empty(cap, np.int64),
            np.empty(cap, np.uint16), np.empty(cap, np.uint8), np.empty(cap, np.int32), np.empty(cap, np.int64),
            np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int32),
            np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap, np.uint64))


def concat(parts):
    """Several Reads as one (their bytes end to end; no copy when they share one buffer)."""
    if len(parts) == 1:
        return parts[0]
    if all(r.raw is parts[0].raw for r in parts):
        raw, roff = parts[0].raw, np.concatenate([r.roff for r in parts])
        return Reads(raw, roff, **{c: np.concatenate([getattr(r, c) for r in parts]) for c in Reads.COLUMNS})
    raw = np.concatenate([r.raw for r in parts])
    base = np.cumsum([0] + [len(r.raw) for r in parts[:-1]])
    roff = np.concatenate([r.roff + b for r, b in zip(parts, base)])
    return Reads(raw, roff, **{c: np.concatenate([getattr(r, c) for r in parts]) for c in Reads.COLUMNS})


# ---------------------------------------------------------------- slow twin (pysam)

def read_slow(path, rg_ids=()):
    """The same columns through pysam, one AlignedSegment at a time."""
    cols = {c: [] for c in Reads.COLUMNS}
    with pysam.AlignmentFile(path, "rb", check_sq=False) as f:
        for r in f:
            cig = r.cigartuples or []
            span = sum(n for op, n in cig if op in (0, 2, 3, 7, 8))
            lclip = 0
            for op, n in cig:
                if op not in (4, 5):
                    break
                lclip += n
            rclip = 0
            for op, n in reversed(cig):
                if op not in (4, 5):
                    break
                rclip += n
            pos = r.reference_start
            end = pos + span if span else pos + 1
            cols["tid"].append(r.reference_id)
            cols["pos"].append(pos)
            cols["end"].append(end)
            cols["flag"].append(r.flag)
            cols["mapq"].append(r.mapping_quality)
            cols["mtid"].append(r.next_reference_id)
            cols["mpos"].append(r.next_reference_start)
            cols["ustart"].append(pos - lclip)
            cols["uend"].append(end + rclip)
            if r.has_tag("MC"):
                mc = pysam.AlignedSegment()
                mc.cigarstring = r.get_tag("MC")
                mcig = mc.cigartuples or []
                mspan = sum(n for op, n in mcig if op in (0, 2, 3, 7, 8))
                ml = sum(n for op, n in _leading(mcig))
                mr = sum(n for op, n in _leading(mcig[::-1]))
                cols["muc5"].append(r.next_reference_start + mspan + mr - 1 if r.mate_is_reverse
                                    else r.next_reference_start - ml)
            else:
                cols["muc5"].append(-1)
            q = r.query_qualities
            cols["score"].append(int(sum(x for x in q if x >= 15)) if q is not None else 0)
            cols["ms"].append(r.get_tag("ms") if r.has_tag("ms") else -1)
            g = r.get_tag("RG") if r.has_tag("RG") else None
            cols["rg"].append(list(rg_ids).index(g) if g in rg_ids else -1)
            h = 14695981039346656037
            for ch in r.query_name.encode():
                h = ((h ^ ch) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
            cols["namehash"].append(h)
    return cols


def _leading(cig):
    out = []
    for op, n in cig:
        if op not in (4, 5):
            break
        out.append((op, n))
    return out
