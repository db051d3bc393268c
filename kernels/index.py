"""Reference index: the base codes of every contig and a minimizer hash table over them.

    python -m kernels.index REF.fa[.gz] PREFIX [-k 19] [-w 10]

writes, next to PREFIX:
    PREFIX.gfi.json     what the index is: format version, k, w, contigs (name, length, offset,
                        M5), array shapes and dtypes, reference checksum. Written last: an index
                        without it is incomplete.
    PREFIX.gfi.seq.npy  uint8[total]    base codes, contigs end to end
    PREFIX.gfi.mzb.npy  uint32[2^b+1]   bucket (low b bits of the hash) -> first distinct minimizer
    PREFIX.gfi.mzk.npy  uint32/64[d]    high bits (hash >> b) of each distinct minimizer, sorted in bucket
    PREFIX.gfi.mzo.npy  uint32[d+1]     distinct minimizer -> first occurrence in mzp
    PREFIX.gfi.mzp.npy  uint32/64[n]    occurrences: (global position << 1) | strand
Arrays are .npy files opened memory-mapped, so ranks and nodes share one copy through the page
cache (or NAS). Every file is written under a temporary name and renamed when complete.
"""
import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from kernels import __version__
from kernels._numba import jit, note_compile
from kernels.errors import InputError, run_cli
from kernels.fasta import read_fasta
from kernels.sketch import sketch_into

FORMAT = "genefarm-index"
FORMAT_VERSION = 1
ARRAYS = ("seq", "mzb", "mzk", "mzo", "mzp")
DEFAULT_K = 19
DEFAULT_W = 10


@dataclass
class Index:
    """A loaded index (arrays memory-mapped). See the module doc for the fields."""
    prefix: str
    meta: dict
    seq: np.ndarray
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


def paths(prefix):
    return {"json": prefix + ".gfi.json", **{a: f"{prefix}.gfi.{a}.npy" for a in ARRAYS}}


@jit
def _sketch_contigs(seq, offsets, k, w, out_h, out_p, scratch):
    """Minimizers of every contig; out_p gets (global position << 1) | strand. Returns count or -1."""
    out_s = np.empty(out_h.shape[0], np.uint8)
    n = 0
    for c in range(offsets.shape[0] - 1):
        n = sketch_into(seq, offsets[c], offsets[c + 1], k, w, scratch, out_h, out_p, out_s, n)
        if n < 0:
            return -1
    for i in range(n):
        out_p[i] = (out_p[i] << 1) | out_s[i]
    return n


@jit
def _bucket_table(bucket_of_distinct, nb):
    """mzb: for bucket b, the first distinct minimizer whose bucket is >= b (nb+1 entries)."""
    mzb = np.empty(nb + 1, np.uint32)
    j = 0
    nd = bucket_of_distinct.shape[0]
    for b in range(nb + 1):
        while j < nd and bucket_of_distinct[j] < b:
            j += 1
        mzb[b] = j
    return mzb


def build(ref, k=DEFAULT_K, w=DEFAULT_W):
    """Index arrays + metadata for a Reference (kernels.fasta)."""
    if k % 2 == 0 or not 11 <= k <= 27:
        raise InputError(f"k={k}: k must be odd, between 11 and 27")
    if not 1 <= w <= 64:
        raise InputError(f"w={w}: w must be between 1 and 64")
    total = ref.total
    cap = int(total * 3 / (w + 1)) + 1024
    scratch = np.empty(int(ref.lengths.max()) + 1, np.uint64)
    while True:
        out_h = np.empty(cap, np.uint64)
        out_p = np.empty(cap, np.int64)
        n = _sketch_contigs(ref.seq, ref.offsets, k, w, out_h, out_p, scratch)
        if n >= 0:
            break
        cap *= 2
    h = out_h[:n]
    p = out_p[:n]
    # buckets on the low b bits of the hash, about one distinct minimizer per bucket
    hs = np.sort(h)
    n_distinct = 1 + int(np.count_nonzero(hs[1:] != hs[:-1])) if n else 0
    del hs
    b = int(np.clip(np.floor(np.log2(max(n_distinct, 1))), 10, 30))
    hi_bits = 2 * k - b
    # sort by (bucket, high bits): a bucket's minimizers are contiguous, sorted by their high bits
    sortkey = ((h & np.uint64((1 << b) - 1)) << np.uint64(hi_bits)) | (h >> np.uint64(b))
    order = np.argsort(sortkey, kind="stable")      # stable: occurrences stay in genome order
    sk = sortkey[order]
    new = np.ones(n, dtype=bool)
    if n > 1:
        np.not_equal(sk[1:], sk[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    mzk = (sk[starts] & np.uint64((1 << hi_bits) - 1)).astype(np.uint32 if hi_bits <= 32 else np.uint64)
    mzo = np.empty(len(starts) + 1, np.uint32)
    mzo[:-1] = starts
    mzo[-1] = n
    mzb = _bucket_table((sk[starts] >> np.uint64(hi_bits)).astype(np.int64), 1 << b)
    pos_dtype = np.uint32 if 2 * total + 1 < 2 ** 32 else np.uint64
    mzp = p[order].astype(pos_dtype)
    occ = np.diff(mzo.astype(np.int64))
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created_by": f"genefarm {__version__}",
        "k": k, "w": w, "bucket_bits": b,
        "total_length": total,
        "contigs": [{"name": nm, "length": int(ln), "offset": int(off), "m5": m5}
                    for nm, ln, off, m5 in zip(ref.names, ref.lengths, ref.offsets[:-1], ref.m5)],
        "reference_md5": reference_checksum(ref.names, ref.m5),
        "n_minimizers": int(n), "n_distinct": int(len(starts)),
        "occurrence_quantiles": {q: int(np.quantile(occ, float(q))) if len(occ) else 0
                                 for q in ("0.5", "0.9", "0.99", "0.999", "0.9999")},
        "max_occurrence": int(occ.max()) if len(occ) else 0,
    }
    arrays = {"seq": ref.seq, "mzb": mzb, "mzk": mzk, "mzo": mzo, "mzp": mzp}
    meta["arrays"] = {a: {"dtype": str(v.dtype), "shape": list(v.shape)} for a, v in arrays.items()}
    return meta, arrays


def reference_checksum(names, m5s):
    """One checksum for a whole reference: contig names and sequences (their M5s), in order."""
    d = hashlib.md5()
    for nm, m5 in zip(names, m5s):
        d.update(f"{nm}\t{m5}\n".encode())
    return d.hexdigest()


def save(prefix, meta, arrays):
    """Write the arrays, then the JSON that makes the index complete; each under a temp name first."""
    ps = paths(prefix)
    d = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(d):
        raise InputError(f"{prefix}: directory {d} does not exist; create it first")
    if os.path.exists(ps["json"]):
        os.unlink(ps["json"])           # an index being rewritten is incomplete until the end
    for a, v in arrays.items():
        tmp = ps[a] + f".tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, v)
        os.replace(tmp, ps[a])
    tmp = ps["json"] + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, ps["json"])


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
    """InputError unless the FASTA at ref_path is the reference the index was built from."""
    ref = read_fasta(ref_path)
    got = reference_checksum(ref.names, ref.m5)
    if got == index.meta["reference_md5"]:
        return
    mine = {c["name"]: (c["length"], c["m5"]) for c in index.meta["contigs"]}
    for nm, ln, m5 in zip(ref.names, ref.lengths, ref.m5):
        if nm not in mine:
            why = f"contig {nm!r} of the reference is not in the index"
            break
        if mine[nm] != (int(ln), m5):
            why = f"contig {nm!r} differs (length {ln} vs {mine[nm][0]} in the index, or its sequence)"
            break
    else:
        why = "the contigs are not the same set or not in the same order"
    raise InputError(f"index {index.prefix} was built from another reference than {ref_path}: {why}; "
                     f"rebuild it with `python -m kernels.index {ref_path} {index.prefix}`")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.index",
                                 description="Build genefarm's reference index (minimizers) next to PREFIX.")
    ap.add_argument("reference", help="reference FASTA (plain, gzip or bgzip)")
    ap.add_argument("prefix", help="index prefix: writes PREFIX.gfi.json and PREFIX.gfi.*.npy")
    ap.add_argument("-k", type=int, default=DEFAULT_K, help=f"k-mer length, odd (default {DEFAULT_K})")
    ap.add_argument("-w", type=int, default=DEFAULT_W, help=f"minimizer window in k-mers (default {DEFAULT_W})")
    ap.add_argument("--json", action="store_true", help="print the index description as JSON on stdout")
    a = ap.parse_args(argv)
    if not a.json:
        note_compile()
    t0 = time.perf_counter()
    ref = read_fasta(a.reference)
    t1 = time.perf_counter()
    meta, arrays = build(ref, a.k, a.w)
    t2 = time.perf_counter()
    meta["build_seconds"] = {"read": round(t1 - t0, 3), "index": round(t2 - t1, 3)}
    meta["reference_path"] = os.path.abspath(a.reference)
    save(a.prefix, meta, arrays)
    size = sum(os.path.getsize(p) for p in paths(a.prefix).values())
    if a.json:
        json.dump({**meta, "bytes": size, "seconds": round(time.perf_counter() - t0, 3)}, sys.stdout, indent=1)
        print()
    else:
        print(f"index {a.prefix}: {len(ref.names)} contigs, {ref.total:,} bp, {meta['n_minimizers']:,} minimizers "
              f"(k={a.k}, w={a.w}), {size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.index")
