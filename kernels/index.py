"""Reference index: the base codes of every contig and a minimizer hash table over them.

    python -m kernels.index REF.fa[.gz] PREFIX [-k 19] [-w 10] [--alt ALT.tsv] [--memory MB]

writes, next to PREFIX:
    PREFIX.gfi.json     what the index is: format version, k, w, contigs (name, length, offset,
                        M5, kind), ALT contigs and where they come from, array shapes and dtypes,
                        reference checksum, build figures. Written last: an index without it is
                        incomplete.
    PREFIX.gfi.seq.npy  uint8[total]    base codes, contigs end to end
    PREFIX.gfi.gaps.npy int64[g, 2]     runs of N: [start, end) in global coordinates, in order
    PREFIX.gfi.mzb.npy  uint32/64[2^b+1] bucket -> first distinct minimizer in it
    PREFIX.gfi.mzk.npy  uint32[d]       low 2k-b bits of each distinct minimizer's key, sorted in bucket
    PREFIX.gfi.mzo.npy  uint32/64[d+1]  distinct minimizer -> first occurrence in mzp
    PREFIX.gfi.mzp.npy  uint32/64[n]    occurrences: (global position << 1) | strand, genome order
Arrays are .npy files opened memory-mapped, so ranks and nodes share one copy through the page
cache (or NAS). Every file is written under a temporary name and renamed when complete.

The build works in memory bounded by its block size, not by the genome (a human genome in about
half a gigabyte): the FASTA is streamed a block at a time (kernels.fasta), the base codes go to
disk as they are read, the minimizers of each block (kernels.sketch.sketch_stream, on a second
thread) are spread over 2^8 partition files by the top bits of their table key, and each
partition is then sorted alone and appended to the table files. A minimizer's table key is its
hash with the top 8 bits moved to the bottom (seed.table_key: a minimizer is the smallest hash of
its window, so the hash's top bits are skewed, the rest even); the table is ordered by the key,
its bucket is the key's top b bits, so partition p holds exactly the buckets p << (b - 8) ..
(p + 1) << (b - 8): concatenating the sorted partitions gives the sorted table.

Contig kinds (GRCh38 naming; `--alt` names ALT contigs with where they come from): `primary`
(chromosomes, unplaced and unlocalised contigs), `alt` (`*_alt`, or listed in --alt), `decoy`
(`*_decoy`, chrEBV), `hla` (`HLA-*`). The aligner does not let alt and hla hits compete with a
primary-assembly hit for its mapping quality (see kernels/altmap.py).
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np

from kernels import __version__
from kernels._numba import jit, note_compile
from kernels.errors import InputError, run_cli
from kernels.fasta import BLOCK, contig_table, stream_fasta
from kernels.progress import Progress
from kernels.seed import table_key, table_key_slow
from kernels.sketch import hash64_slow, sketch_slow, sketch_stream, stream_state

FORMAT = "genefarm-index"
FORMAT_VERSION = 2
ARRAYS = ("seq", "gaps", "mzb", "mzk", "mzo", "mzp")
DEFAULT_K = 19
DEFAULT_W = 10
PART_BITS = 8                 # 256 partitions of the minimizers, sorted one at a time
SEQ_BLOCK = 4 << 20           # bases sketched per job
FASTA_BLOCK = BLOCK           # bytes of FASTA text read at a time
MAX_PENDING = 2               # sketch jobs queued behind the reader
FIXED_MB = 160                # the interpreter, numpy and numba's compiled kernels


@dataclass
class Index:
    """A loaded index (arrays memory-mapped). See the module doc for the fields."""
    prefix: str
    meta: dict
    seq: np.ndarray
    gaps: np.ndarray
    mzb: np.ndarray
    mzk: np.ndarray
    mzo: np.ndarray
    mzp: np.ndarray

    @property
    def k(self):
        return self.meta["k"]

    @property
    def w(self):
        return self.meta["w"]

    @property
    def bucket_bits(self):
        return self.meta["bucket_bits"]

    @property
    def names(self):
        return [c["name"] for c in self.meta["contigs"]]

    @property
    def lengths(self):
        return np.array([c["length"] for c in self.meta["contigs"]], dtype=np.int64)

    @property
    def offsets(self):
        off = [c["offset"] for c in self.meta["contigs"]]
        return np.array(off + [self.meta["total_length"]], dtype=np.int64)

    @property
    def kinds(self):
        return [c.get("kind", "primary") for c in self.meta["contigs"]]


def paths(prefix):
    return {"json": prefix + ".gfi.json", **{a: f"{prefix}.gfi.{a}.npy" for a in ARRAYS}}


# ---------------------------------------------------------------- contig kinds and ALT origins

KINDS = ("primary", "alt", "decoy", "hla")


def kind_of(name, alt_names=()):
    """A contig's kind from GRCh38's naming, or from an ALT list."""
    if name in alt_names or name.endswith("_alt"):
        return "alt"
    if name.startswith("HLA-"):
        return "hla"
    if name.endswith("_decoy") or name == "chrEBV":
        return "decoy"
    return "primary"


def read_alt(path):
    """ALT contigs and where each comes from: {alt name: (primary contig, start, end)} (0-based,
    half-open). Lines: ALT name, primary contig, start, end, tab-separated ('#' comments and a
    header line starting with 'alt' or 'name' are skipped)."""
    out = {}
    try:
        with open(path) as f:
            lines = list(f)
    except OSError as e:
        raise InputError(f"--alt {path}: cannot read: {e.strerror}") from None
    for i, ln in enumerate(lines, 1):
        if not ln.strip() or ln.startswith("#"):
            continue
        f = ln.rstrip("\r\n").split("\t")
        if i == 1 and f[0].lower() in ("alt", "name", "alt_name", "contig"):
            continue
        if len(f) < 4:
            raise InputError(f"{path}: line {i}: expected ALT name, primary contig, start, end (tab-separated)")
        try:
            a, b = int(f[2]), int(f[3])
        except ValueError:
            raise InputError(f"{path}: line {i}: start and end must be integers") from None
        if not 0 <= a < b:
            raise InputError(f"{path}: line {i}: start {a} and end {b} do not make an interval")
        if f[0] in out:
            raise InputError(f"{path}: line {i}: ALT contig {f[0]!r} listed twice")
        out[f[0]] = (f[1], a, b)
    return out


def check_alt(alt, names, lengths, path):
    """Every listed ALT contig must be in the reference, and come from a primary contig's span."""
    length = dict(zip(names, lengths))
    for a, (p, s, e) in alt.items():
        if a not in length:
            raise InputError(f"--alt {path}: ALT contig {a!r} is not in the reference")
        if p not in length:
            raise InputError(f"--alt {path}: {a!r} comes from contig {p!r}, which is not in the reference")
        if e > length[p]:
            raise InputError(f"--alt {path}: {a!r} comes from {p}:{s + 1}-{e}, beyond its end ({length[p]:,})")


# ---------------------------------------------------------------- .npy files written as they grow

class NpyWriter:
    """A 1-D (or n x width) .npy file written by appending, under a temporary name until close()."""

    def __init__(self, path, dtype, width=None):
        self.path, self.dtype, self.width = path, np.dtype(dtype), width
        self.tmp = f"{path}.tmp{os.getpid()}"
        self.f = open(self.tmp, "wb")
        self.n = 0
        self.hlen = self._header(10 ** 15)

    def _header(self, n):
        self.f.seek(0)
        shape = (n,) if self.width is None else (n, self.width)
        np.lib.format.write_array_header_1_0(self.f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": shape})
        return self.f.tell()

    def append(self, a):
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if a.size:
            self.f.write(a.data)
        self.n += len(a)

    def close(self):
        end = self.f.tell()
        if self._header(self.n) != self.hlen:
            raise AssertionError("npy header changed length")
        self.f.seek(end)
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        if not self.f.closed:
            self.f.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


# ---------------------------------------------------------------- minimizers into partitions

@jit
def partition_keys(out_h, out_v, n, hbits, pbits, vbits, two_words, keys, counts):
    """Group n minimizers by partition (the top pbits of their table key, seed.table_key), keeping
    their order within a partition. One word per minimizer, ((key & low bits) << vbits) | value,
    when two_words is False; else two words (key, value). counts gets the minimizers per partition."""
    sh = np.uint64(hbits - pbits)
    low = (np.uint64(1) << sh) - np.uint64(1)
    npart = 1 << pbits
    for p in range(npart):
        counts[p] = 0
    for i in range(n):
        counts[np.int64(table_key(out_h[i], hbits) >> sh)] += 1
    fill = np.empty(npart, np.int64)
    acc = 0
    for p in range(npart):
        fill[p] = acc
        acc += counts[p]
    for i in range(n):
        g = table_key(out_h[i], hbits)
        p = np.int64(g >> sh)
        j = fill[p]
        if two_words:
            keys[2 * j] = g
            keys[2 * j + 1] = np.uint64(out_v[i])
        else:
            keys[j] = ((g & low) << np.uint64(vbits)) | np.uint64(out_v[i])
        fill[p] = j + 1


class _Sketcher:
    """Sketches blocks of a contig on one thread and appends their minimizers to the partition files."""

    def __init__(self, tmpdir, k, w):
        self.k, self.w = k, w
        self.hbits = 2 * k
        self.two_words = self.hbits - PART_BITS > 30          # one word leaves >= 34 bits for values
        self.vbits = 64 - (self.hbits - PART_BITS) if not self.two_words else 64
        self.max_value = (1 << self.vbits) - 1 if not self.two_words else (1 << 63) - 1
        self.files = [open(os.path.join(tmpdir, f"part{p:03d}"), "wb") for p in range(1 << PART_BITS)]
        self.counts = np.zeros(1 << PART_BITS, np.int64)
        self.n = 0
        cap = SEQ_BLOCK + 2
        self.out_h = np.empty(cap, np.uint64)
        self.out_v = np.empty(cap, np.int64)
        self.keys = np.empty(cap * (2 if self.two_words else 1), np.uint64)
        self.pc = np.zeros(1 << PART_BITS, np.int64)

    def new_contig(self):
        return stream_state(self.w)

    def job(self, state, codes, gpos0, final):
        """Runs on the sketch thread (jobs in order): one block of a contig."""
        nb = len(codes)
        if 2 * (gpos0 + nb) + 1 > self.max_value:
            raise InputError(f"the reference is longer than this index layout holds with k={self.k} "
                             f"({self.max_value // 2:,} bases); use -k 21 or more")
        m = sketch_stream(codes, nb, gpos0, self.k, self.w, *state, self.out_h, self.out_v, 0, final)
        if m == 0:
            return
        partition_keys(self.out_h, self.out_v, m, self.hbits, PART_BITS, self.vbits, self.two_words,
                       self.keys, self.pc)
        at = 0
        words = 2 if self.two_words else 1
        for p in np.flatnonzero(self.pc):
            c = int(self.pc[p])
            self.files[p].write(memoryview(self.keys[words * at:words * (at + c)]).cast("B"))
            at += c
        self.counts += self.pc
        self.n += m

    def close(self):
        for f in self.files:
            f.close()


@jit
def gap_runs(codes, base, open_at, out):
    """N runs of a block whose first base is at global position base, continuing a run that is
    open at the block's start when open_at >= 0 (where it began). out (int64[cap, 2]) gets the
    runs closed inside the block; returns (their number, the start of the run still open at the
    block's end or -1). When there are more than cap runs only the first cap are written: call
    again with room for the number returned."""
    n = 0
    cap = out.shape[0]
    start = open_at
    for i in range(codes.shape[0]):
        if codes[i] == 4:
            if start < 0:
                start = base + i
        elif start >= 0:
            if n < cap:
                out[n, 0] = start
                out[n, 1] = base + i
            n += 1
            start = -1
    return n, start


def gap_runs_slow(codes, base, open_at):
    """The same with numpy: (runs [[s, e], ...], still open start or -1)."""
    isn = (np.asarray(codes) == 4).view(np.int8)
    prev = 1 if open_at >= 0 else 0
    d = np.diff(np.concatenate((np.array([prev], np.int8), isn)))
    starts = ([open_at] if prev else []) + (np.flatnonzero(d == 1) + base).tolist()
    ends = (np.flatnonzero(d == -1) + base).tolist()
    return [[s, e] for s, e in zip(starts, ends)], (starts[len(ends)] if len(starts) > len(ends) else -1)


# ---------------------------------------------------------------- the build

def need_mb(total_estimate, w=DEFAULT_W):
    """Memory the build needs for its buffers, in MB: the block buffers (text, codes, minimizers,
    partition keys, for the reader and the sketch thread) and the largest partition sorted."""
    blocks = FASTA_BLOCK * 3 + MAX_PENDING * SEQ_BLOCK + (SEQ_BLOCK + 2) * (8 + 8 + 16)
    part = 2.0 * total_estimate / (w + 1) / (1 << PART_BITS) * 1.5 * 40
    return int(FIXED_MB + (blocks + part) / 1e6) + 1


def estimate_bases(path):
    """An upper estimate of a FASTA's bases from its size (a .fai beside it gives them exactly)."""
    for fai in (path + ".fai",):
        try:
            with open(fai) as f:
                return sum(int(ln.split("\t")[1]) for ln in f if ln.strip())
        except (OSError, ValueError, IndexError):
            pass
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return size * 5 if gz else size


def build(ref_path, prefix, k=DEFAULT_K, w=DEFAULT_W, alt_path=None, memory_mb=None, tmp_dir=None,
          progress=None):
    """Build the index of the FASTA at ref_path into PREFIX.gfi.* (the JSON last); returns its
    description (meta)."""
    if k % 2 == 0 or not 11 <= k <= 27:
        raise InputError(f"k={k}: k must be odd, between 11 and 27")
    if not 1 <= w <= 64:
        raise InputError(f"w={w}: w must be between 1 and 64")
    ps = paths(prefix)
    d = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(d):
        raise InputError(f"{prefix}: directory {d} does not exist; create it first")
    alt = read_alt(alt_path) if alt_path else {}
    if not os.path.exists(ref_path):
        raise InputError(f"{ref_path}: no such FASTA file")
    est = estimate_bases(ref_path)
    need = need_mb(est, w)
    if memory_mb is not None and need > memory_mb:
        raise InputError(f"{ref_path}: indexing about {est / 1e9:.2f} Gb needs about {need:,} MB of memory "
                         f"(--memory {memory_mb:,} MB given); give --memory {need} or more")
    if os.path.exists(ps["json"]):
        os.unlink(ps["json"])           # an index being rewritten is incomplete until the end
    tmp = tmp_dir or f"{prefix}.gfi.tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    writers = []
    t0 = time.perf_counter()
    try:
        meta = _build(ref_path, ps, tmp, k, w, alt, alt_path, memory_mb, progress, writers)
        meta["reference_path"] = os.path.abspath(ref_path)
        meta["build"]["seconds"] = round(time.perf_counter() - t0, 3)
        save_meta(prefix, meta)
    except BaseException:
        for wr in writers:
            wr.abort()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _build(ref_path, ps, tmp, k, w, alt, alt_path, memory_mb, progress, writers):
    t0 = time.perf_counter()
    seqw = NpyWriter(ps["seq"], np.uint8)
    writers.append(seqw)
    sk = _Sketcher(tmp, k, w)
    contigs, gaps = [], []
    gap_buf = np.empty((1024, 2), np.int64)
    total = 0
    open_gap = -1
    pending = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        def submit(*a):
            pending.append(pool.submit(sk.job, *a))
            while len(pending) > MAX_PENDING:
                pending.pop(0).result()
        state = None
        for kind, a, b in stream_fasta(ref_path, FASTA_BLOCK, progress=progress.read if progress else None):
            if kind == "seq":
                seqw.append(a)
                ng, still = gap_runs(a, total, open_gap, gap_buf)
                if ng > len(gap_buf):
                    gap_buf = np.empty((ng, 2), np.int64)
                    ng, still = gap_runs(a, total, open_gap, gap_buf)
                open_gap = still
                if ng:
                    gaps.append(gap_buf[:ng].copy())
                for s in range(0, len(a), SEQ_BLOCK):
                    submit(state, a[s:s + SEQ_BLOCK], total + s, False)
                total += len(a)
            elif kind == "start":
                state = sk.new_contig()
            else:
                submit(state, np.empty(0, np.uint8), total, True)
                if open_gap >= 0:
                    gaps.append(np.array([[open_gap, total]], np.int64))
                    open_gap = -1
                contigs.append({"name": a.name, "length": int(a.length), "offset": total - int(a.length),
                                "m5": a.m5, "kind": kind_of(a.name, alt)})
                if progress:
                    progress.contig(len(contigs))
        for f in pending:
            f.result()
    sk.close()
    seqw.close()
    names = [c["name"] for c in contigs]
    check_alt(alt, names, [c["length"] for c in contigs], alt_path)
    gw = NpyWriter(ps["gaps"], np.int64, width=2)
    writers.append(gw)
    gaps = np.concatenate(gaps) if gaps else np.empty((0, 2), np.int64)
    gw.append(gaps)
    gw.close()
    t1 = time.perf_counter()
    n = sk.n
    big = int(sk.counts.max()) if n else 0
    need = FIXED_MB + int(big * 1.0 * (16 if sk.two_words else 8) * 5 / 1e6) + 1
    if memory_mb is not None and need > memory_mb:
        raise InputError(f"{ref_path}: sorting the largest partition of its {n:,} minimizers needs about "
                         f"{need:,} MB (--memory {memory_mb:,} MB given); give --memory {need} or more")
    if progress:
        progress.phase(f"sorting {n:,} minimizers in {1 << PART_BITS} partitions")
    table = _sort_partitions(tmp, sk, n, total, k, ps, writers, progress)
    t2 = time.perf_counter()
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created_by": f"genefarm {__version__}",
        "k": k, "w": w, "bucket_bits": table["b"], "hash_bits": 2 * k,
        "total_length": total, "contigs": contigs,
        "alt": {a: {"primary": p, "start": s, "end": e} for a, (p, s, e) in alt.items()},
        "reference_md5": reference_checksum(names, [c["m5"] for c in contigs]),
        "n_minimizers": int(n), "n_distinct": table["d"],
        "occurrence_quantiles": table["quantiles"], "max_occurrence": table["max_occ"],
        "n_gaps": len(gaps), "non_n_bases": int(total - int((gaps[:, 1] - gaps[:, 0]).sum())),
        "arrays": {a: _describe(ps[a]) for a in ARRAYS},
        "build": {"read_sketch_seconds": round(t1 - t0, 3), "sort_seconds": round(t2 - t1, 3),
                  "peak_rss_mb": peak_rss_mb()},
    }
    return meta


def _describe(path):
    v = np.load(path, mmap_mode="r")
    return {"dtype": str(v.dtype), "shape": list(v.shape)}


def _sort_partitions(tmp, sk, n, total, k, ps, writers, progress):
    """Pass 2: each partition sorted and appended to mzk, mzo, mzp and mzb."""
    hbits = 2 * k
    sh = hbits - PART_BITS
    odtype = np.uint32 if n < 2 ** 32 else np.uint64
    pdtype = np.uint32 if 2 * total + 1 < 2 ** 32 else np.uint64
    vmask = np.uint64((1 << sk.vbits) - 1) if not sk.two_words else None
    mzk = mzo = mzp = mzb = None
    b = None
    d_base = 0
    n_base = 0
    cap = 1 << 20
    hist = np.zeros(cap + 1, np.int64)
    max_occ = 0
    for p in range(1 << PART_BITS):
        path = os.path.join(tmp, f"part{p:03d}")
        raw = np.fromfile(path, np.uint64)
        os.unlink(path)
        if sk.two_words:
            rec = raw.reshape(-1, 2)
            order = np.argsort(rec[:, 0], kind="stable")
            h = rec[order, 0]
            v = rec[order, 1]
            del rec, order
        else:
            raw.sort()
            h = (raw >> np.uint64(sk.vbits)) | (np.uint64(p) << np.uint64(sh))
            v = raw & vmask
        del raw
        m = len(h)
        new = np.ones(m, np.bool_)
        if m > 1:
            np.not_equal(h[1:], h[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        hd = h[starts]
        del h, new
        if b is None:
            # buckets: about one distinct minimizer each (estimated from this first partition), at
            # least as many as partitions, and few enough bits left over for mzk's uint32
            est = max(len(starts), 1) * (1 << PART_BITS)
            b = int(np.clip(np.floor(np.log2(est)), max(10, PART_BITS, hbits - 32), 30))
            keymask = np.uint64((1 << (hbits - b)) - 1)
            mzk = NpyWriter(ps["mzk"], np.uint32)
            mzo = NpyWriter(ps["mzo"], odtype)
            mzp = NpyWriter(ps["mzp"], pdtype)
            mzb = NpyWriter(ps["mzb"], np.uint32 if n < 2 ** 32 else np.uint64)
            writers += [mzk, mzo, mzp, mzb]
        mzk.append(hd & keymask)
        mzo.append(starts.astype(np.int64) + n_base)
        mzp.append(v)
        # bucket j of this partition starts at the first distinct minimizer of a bucket >= j
        per = np.bincount((hd >> np.uint64(hbits - b)).astype(np.int64) - (p << (b - PART_BITS)),
                          minlength=1 << (b - PART_BITS))
        first = np.empty(len(per), np.int64)
        first[0] = d_base
        np.cumsum(per[:-1], out=first[1:])
        first[1:] += d_base
        mzb.append(first)
        occ = np.diff(np.append(starts, m))
        if len(occ):
            hc = np.bincount(np.minimum(occ, cap))
            hist[:len(hc)] += hc
            max_occ = max(max_occ, int(occ.max()))
        d_base += len(starts)
        n_base += m
        if progress:
            progress.partition(p + 1, 1 << PART_BITS)
    mzo.append(np.array([n_base], np.int64))
    mzb.append(np.array([d_base], np.int64))
    for wr in (mzk, mzo, mzp, mzb):
        wr.close()
    return {"b": b, "d": int(d_base), "max_occ": max_occ, "quantiles": _quantiles(hist)}


def _quantiles(hist):
    """Occurrence quantiles from a histogram of occurrence counts (as np.quantile, 'lower')."""
    tot = int(hist.sum())
    cum = np.cumsum(hist)
    out = {}
    for q in ("0.5", "0.9", "0.99", "0.999", "0.9999"):
        if tot == 0:
            out[q] = 0
            continue
        out[q] = int(np.searchsorted(cum, int(np.floor(float(q) * (tot - 1))) + 1, side="left"))
    return out


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reference_checksum(names, m5s):
    """One checksum for a whole reference: contig names and sequences (their M5s), in order."""
    d = hashlib.md5()
    for nm, m5 in zip(names, m5s):
        d.update(f"{nm}\t{m5}\n".encode())
    return d.hexdigest()


def save_meta(prefix, meta):
    """The JSON that makes the index complete, written last, under a temporary name first."""
    p = paths(prefix)["json"]
    tmp = p + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, p)


def load(prefix):
    """Open an index memory-mapped; InputError if it is missing, incomplete or inconsistent."""
    ps = paths(prefix)
    if not os.path.exists(ps["json"]):
        present = [p for p in ps.values() if os.path.exists(p)]
        hint = ("the index is incomplete (its build did not finish)" if present
                else "no index with this prefix")
        raise InputError(f"{ps['json']}: not found: {hint}; build it with "
                         f"`python -m kernels.index REF.fa {prefix}`")
    try:
        with open(ps["json"]) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{ps['json']}: unreadable index description ({e}); rebuild the index") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{ps['json']}: not a genefarm index of format version {FORMAT_VERSION} "
                         f"(found {meta.get('format')} {meta.get('format_version')}); rebuild the index")
    arrays = {}
    for a in ARRAYS:
        try:
            v = np.load(ps[a], mmap_mode="r")
        except FileNotFoundError:
            raise InputError(f"{ps[a]}: missing index file; rebuild the index") from None
        except (OSError, ValueError) as e:
            raise InputError(f"{ps[a]}: unreadable index file ({e}); rebuild the index") from None
        want = meta["arrays"][a]
        if str(v.dtype) != want["dtype"] or list(v.shape) != want["shape"]:
            raise InputError(f"{ps[a]}: does not belong to {ps['json']} (shape {list(v.shape)} {v.dtype}, "
                             f"expected {want['shape']} {want['dtype']}): index files from different "
                             f"builds or references were mixed; rebuild the index")
        arrays[a] = v
    return Index(prefix=prefix, meta=meta, **arrays)


def check_reference(index, ref_path):
    """InputError unless the FASTA at ref_path is the reference the index was built from (streamed:
    the FASTA's names, lengths and M5s against the index's)."""
    table = contig_table(ref_path)
    got = reference_checksum([c.name for c in table], [c.m5 for c in table])
    if got == index.meta["reference_md5"]:
        return
    mine = {c["name"]: (c["length"], c["m5"]) for c in index.meta["contigs"]}
    for c in table:
        if c.name not in mine:
            why = f"contig {c.name!r} of the reference is not in the index"
            break
        if mine[c.name] != (int(c.length), c.m5):
            why = f"contig {c.name!r} differs (length {c.length} vs {mine[c.name][0]} in the index, or its sequence)"
            break
    else:
        why = "the contigs are not the same set or not in the same order"
    raise InputError(f"index {index.prefix} was built from another reference than {ref_path}: {why}; "
                     f"rebuild it with `python -m kernels.index {ref_path} {index.prefix}`")


# ---------------------------------------------------------------- slow twin (plain Python)

def build_slow(ref, k, w, b):
    """The table arrays (mzb, mzk, mzo, mzp) of a Reference (kernels.fasta.read_fasta) written out
    plainly: every contig's minimizers (sketch_slow), sorted by (hash, genome order), bucketed by the
    top b bits of the table key (seed.table_key). b is the build's choice (an estimate: it shapes the table, not its content)."""
    hbits = 2 * k
    occ = []
    for c in range(len(ref.names)):
        a, e = int(ref.offsets[c]), int(ref.offsets[c + 1])
        hs, ps_, ss = sketch_slow(ref.seq[a:e], k, w)
        occ += [(table_key_slow(int(h), hbits), ((int(p) + a) << 1) | int(s)) for h, p, s in zip(hs, ps_, ss)]
    occ.sort()
    distinct = sorted({h for h, _ in occ})
    first = {}
    for i, (h, _) in enumerate(occ):
        first.setdefault(h, i)
    mzk = [h & ((1 << (hbits - b)) - 1) for h in distinct]
    mzo = [first[h] for h in distinct] + [len(occ)]
    buckets = [h >> (hbits - b) for h in distinct]
    mzb = [sum(1 for x in buckets if x < t) for t in range(1 << b)] + [len(distinct)] if len(distinct) < 5000 \
        else list(np.searchsorted(np.array(buckets), np.arange((1 << b) + 1)))
    return {"mzb": np.array(mzb, np.int64), "mzk": np.array(mzk, np.int64), "mzo": np.array(mzo, np.int64),
            "mzp": np.array([v for _, v in occ], np.int64)}


def hash_of_slow(kmer_codes, k):
    """The hash the index uses for a k-mer given as codes (canonical form), for tests."""
    f = 0
    r = 0
    for q in range(k):
        f = f * 4 + int(kmer_codes[q])
        r = r * 4 + (3 - int(kmer_codes[k - 1 - q]))
    return hash64_slow(min(f, r), k)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.index",
                                 description="Build genefarm's reference index (minimizers) next to PREFIX.")
    ap.add_argument("reference", help="reference FASTA (plain, gzip or bgzip)")
    ap.add_argument("prefix", help="index prefix: writes PREFIX.gfi.json and PREFIX.gfi.*.npy")
    ap.add_argument("-k", type=int, default=DEFAULT_K, help=f"k-mer length, odd (default {DEFAULT_K})")
    ap.add_argument("-w", type=int, default=DEFAULT_W, help=f"minimizer window in k-mers (default {DEFAULT_W})")
    ap.add_argument("--alt", metavar="TSV",
                    help="ALT contigs and where they come from: name, primary contig, start, end (0-based); "
                         "contigs named *_alt are ALT without it")
    ap.add_argument("--memory", type=int, metavar="MB",
                    help="refuse to start when the build would need more memory than this (it says how much)")
    ap.add_argument("--tmp", metavar="DIR", help="temporary directory for the minimizer partitions "
                                                 "(default: beside PREFIX; about 8 bytes per 5 bases)")
    ap.add_argument("--json", action="store_true", help="print the index description as JSON on stdout")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    a = ap.parse_args(argv)
    if not a.json and not a.quiet:
        note_compile()
    t0 = time.perf_counter()
    prog = None if a.quiet else Progress("kernels.index", os.path.getsize(a.reference)
                                         if os.path.exists(a.reference) else 0)
    meta = build(a.reference, a.prefix, a.k, a.w, a.alt, a.memory, a.tmp, prog)
    size = sum(os.path.getsize(p) for p in paths(a.prefix).values())
    if a.json:
        json.dump({**meta, "bytes": size, "seconds": round(time.perf_counter() - t0, 3)}, sys.stdout, indent=1)
        print()
    if not a.quiet:
        kinds = {}
        for c in meta["contigs"]:
            kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
        print(f"index {a.prefix}: {len(meta['contigs']):,} contigs ("
              + ", ".join(f"{v:,} {k_}" for k_, v in kinds.items()) + f"), {meta['total_length']:,} bp, "
              f"{meta['n_minimizers']:,} minimizers (k={a.k}, w={a.w}), {size / 1e6:,.1f} MB, "
              f"{time.perf_counter() - t0:.1f} s, peak {meta['build']['peak_rss_mb']:,.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.index")
