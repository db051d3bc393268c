"""Coordinate sort and duplicate marking (the rules of samtools markdup and Picard).

    python -m kernels.markdup IN.bam [IN2.bam ...] -o OUT.bam [--json]   sorted, marked, indexed

A pair's signature is its library and the unclipped 5' ends (contig, position, strand) of both
mates; pairs with the same signature are copies of one fragment, and all but the best are marked
(the best: the highest sum of base qualities >= 15 over both mates, then the smallest name hash).
A read whose mate is unmapped, or an unpaired read, is a fragment: it is a duplicate when a pair
has a read with the same 5' end, or another such fragment scores higher. Unmapped, secondary,
supplementary and QC-failed reads are never marked.

Every record carries what its pair needs: its own 5' end and score, its mate's 5' end (from MC)
and score (ms). So a record's decision needs only the records whose 5' end equals its own,
which lie within a read length of it: any region holding a record and enough of its neighbours
reaches the same decision, however the genome is sharded.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from kernels._numba import jit
from kernels.bam import for_plain_bam
from kernels.errors import InputError, run_cli
from kernels.types import F_DUP, F_MREVERSE, F_MUNMAP, F_PAIRED, F_QCFAIL, F_REVERSE, F_SECONDARY, F_SUPPL, F_UNMAP

POS_BITS = 40
POS_OFFSET = 1 << 30        # unclipped positions down to -2^30 (contigs up to 2^40 - 2^30)


def sort_order(reads):
    """Coordinate order: (contig, position, strand, name hash, mate 1 before 2), records without a
    position last. The order depends only on the records, not on the order they came in."""
    tkey = np.where(reads.tid < 0, np.iinfo(np.int32).max, reads.tid)
    return np.lexsort(((reads.flag & 0xC0), reads.namehash, (reads.flag & F_REVERSE) != 0, reads.pos, tkey))


def _end_key(tid, pos, rev):
    """One int64 for a 5' end: contig, position, strand. An unclipped 5' end can lie before the
    contig's start (a clipped read at position 0), hence the offset."""
    return ((tid.astype(np.int64) << POS_BITS) + (pos.astype(np.int64) + POS_OFFSET)) * 2 + rev.astype(np.int64)


def mark_duplicates(reads, lib_of_rg):
    """Boolean duplicate flag for every record. lib_of_rg maps a read group index to a library index
    (read groups of one library share it); records without a read group are library 0."""
    f = reads.flag.astype(np.int64)
    usable = (f & (F_UNMAP | F_SECONDARY | F_SUPPL | F_QCFAIL)) == 0
    lib = np.where(reads.rg >= 0, np.asarray(lib_of_rg, np.int64)[np.maximum(reads.rg, 0)] + 1, 0) \
        if len(lib_of_rg) else np.zeros(reads.n, np.int64)
    own = _end_key(reads.tid, reads.uc5, (f & F_REVERSE) != 0)
    mate = _end_key(reads.mtid, reads.muc5, (f & F_MREVERSE) != 0)
    is_pair = usable & ((f & F_PAIRED) != 0) & ((f & F_MUNMAP) == 0) & (reads.muc5 >= 0)
    is_frag = usable & ~is_pair
    lo = np.minimum(own, mate)
    hi = np.maximum(own, mate)
    ms = np.where(reads.ms >= 0, reads.ms, reads.score)
    pscore = reads.score.astype(np.int64) + ms
    return _mark(is_pair, is_frag, lib, own, lo, hi, pscore, reads.score.astype(np.int64), reads.namehash)


def _mark(is_pair, is_frag, lib, own, lo, hi, pscore, fscore, namehash):
    n = len(is_pair)
    dup = np.zeros(n, np.bool_)
    # pairs: group by (library, both ends); the best (score, then smallest name hash) is kept
    pi = np.flatnonzero(is_pair)
    if len(pi):
        o = pi[np.lexsort((namehash[pi], -pscore[pi], hi[pi], lo[pi], lib[pi]))]
        _mark_groups(o, lib, lo, hi, namehash, dup)
    # fragments: duplicates of any pair read with the same 5' end, else all but the best fragment
    fi = np.flatnonzero(is_frag)
    if len(fi):
        both = np.concatenate([pi, fi])
        is_f = np.concatenate([np.zeros(len(pi), np.bool_), np.ones(len(fi), np.bool_)])
        o = np.lexsort((is_f, own[both], lib[both]))
        hit = _fragments_at_pair_ends(both[o], is_f[o], lib, own)
        dup[hit] = True
        rest = np.setdiff1d(fi, hit)
        if len(rest):
            o = rest[np.lexsort((namehash[rest], -fscore[rest], own[rest], lib[rest]))]
            _mark_groups(o, lib, own, own, namehash, dup)
    return dup


@jit
def _fragments_at_pair_ends(order, is_frag, lib, own):
    """Records (in `order`, grouped by library and 5' end, pair reads first) that are fragments
    sharing their 5' end with a pair read."""
    out = np.empty(order.shape[0], np.int64)
    m = 0
    i = 0
    n = order.shape[0]
    while i < n:
        a = order[i]
        j = i
        has_pair = False
        while j < n and lib[order[j]] == lib[a] and own[order[j]] == own[a]:
            if not is_frag[j]:
                has_pair = True
            elif has_pair:
                out[m] = order[j]
                m += 1
            j += 1
        i = j
    return out[:m]


@jit
def _mark_groups(order, lib, k1, k2, namehash, dup):
    """order lists records grouped by (lib, k1, k2), best first; the first template of each group
    (all its records: same name hash) is kept, every other record is marked."""
    i = 0
    n = order.shape[0]
    while i < n:
        a = order[i]
        j = i
        keep = namehash[a]
        while j < n:
            b = order[j]
            if lib[b] != lib[a] or k1[b] != k1[a] or k2[b] != k2[a]:
                break
            if namehash[b] != keep:
                dup[b] = True
            j += 1
        i = j


# ---------------------------------------------------------------- slow twin (plain Python)

def mark_duplicates_slow(reads, lib_of_rg):
    """The rules written plainly with dictionaries."""
    n = reads.n
    libs = [(lib_of_rg[g] + 1) if g >= 0 and len(lib_of_rg) else 0 for g in reads.rg]
    dup = [False] * n
    uc5 = reads.uc5
    pairs, frags = {}, {}
    ends_of_pairs = set()
    for i in range(n):
        f = int(reads.flag[i])
        if f & (F_UNMAP | F_SECONDARY | F_SUPPL | F_QCFAIL):
            continue
        own = (int(reads.tid[i]), int(uc5[i]), bool(f & F_REVERSE))
        if f & F_PAIRED and not f & F_MUNMAP and reads.muc5[i] >= 0:
            mate = (int(reads.mtid[i]), int(reads.muc5[i]), bool(f & F_MREVERSE))
            key = (libs[i],) + tuple(sorted([own, mate]))
            ms = int(reads.ms[i]) if reads.ms[i] >= 0 else int(reads.score[i])
            pairs.setdefault(key, []).append((-(int(reads.score[i]) + ms), int(reads.namehash[i]), i))
            ends_of_pairs.add((libs[i], own))
        else:
            frags.setdefault((libs[i], own), []).append((-int(reads.score[i]), int(reads.namehash[i]), i))
    for members in pairs.values():
        best = min(members)[1]
        for _, h, i in members:
            dup[i] = h != best
    for key, members in frags.items():
        if key in ends_of_pairs:
            for _, _, i in members:
                dup[i] = True
        else:
            best = min(members)[1]
            for _, h, i in members:
                dup[i] = h != best
    return np.array(dup, np.bool_)


# ---------------------------------------------------------------- CLI

def main(argv=None):
    from kernels.bamheader import check_headers, libraries, sorted_header_bytes
    from kernels.bamread import concat, read_bams
    ap = argparse.ArgumentParser(prog="python -m kernels.markdup",
                                 description="Sort BAM records by coordinate and mark duplicates; writes BAM + .bai.")
    ap.add_argument("inputs", nargs="+", help="BAM files (any order, e.g. the aligner's output or part files)")
    ap.add_argument("-o", "--output", required=True, help="output BAM (sorted, duplicates flagged, indexed)")
    ap.add_argument("--level", type=int, default=6, choices=range(0, 10), metavar="0-9", help="BGZF level (default 6)")
    ap.add_argument("-t", "--threads", type=int, default=1, help="compressing processes for the output (default 1)")
    ap.add_argument("--json", action="store_true", help="print a summary as JSON on stdout")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    hdr = check_headers(a.inputs)
    ids, libs = libraries(hdr)
    reads = concat([r for r, _ in read_bams(a.inputs, ids)[0]])
    t1 = time.perf_counter()
    order = sort_order(reads)
    reads = reads.take(order)
    t2 = time.perf_counter()
    dup = mark_duplicates(reads, libs)
    reads.flag = with_dup_flags(reads.flag, dup)
    t3 = time.perf_counter()
    write_sorted_bam(a.output, sorted_header_bytes(hdr, argv), reads, a.level, max(1, a.threads))
    t4 = time.perf_counter()
    res = {"records": int(reads.n), "duplicates": int(dup.sum()),
           "seconds": {"read": round(t1 - t0, 3), "sort": round(t2 - t1, 3), "markdup": round(t3 - t2, 3),
                       "write": round(t4 - t3, 3)}, "bam": os.path.abspath(a.output)}
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    else:
        print(f"{res['records']:,} records, {res['duplicates']:,} duplicates -> {a.output}", file=sys.stderr)
    return 0


def with_dup_flags(flag, dup):
    return np.where(dup, flag | F_DUP, flag & ~np.uint16(F_DUP)).astype(np.uint16)


def write_sorted_records(path, header, reads, level=6, threads=1, chunk=200_000):
    """Sorted records into a BAM at path (no index; the caller renames it). With threads > 1 the
    records are cut into that many consecutive stretches, each compressed by its own child
    process into a file, and the files joined in order by samtools cat (through pysam)."""
    import pysam
    n = reads.n
    k = max(1, min(threads, n // chunk + 1))
    bounds = [n * i // k for i in range(k + 1)]
    paths = [path] if k == 1 else [f"{path}.piece{i}" for i in range(k)]
    writers = [for_plain_bam(level) for _ in range(k)]
    try:
        for w, p in zip(writers, paths):
            w.open(p, header)
        # feed the writers in turn, a chunk at a time, so that all compress at once
        pos = bounds[:-1]
        while any(a < b for a, b in zip(pos, bounds[1:])):
            for i, w in enumerate(writers):
                if pos[i] < bounds[i + 1]:
                    e = min(bounds[i + 1], pos[i] + chunk)
                    w.write(reads.record_bytes(pos[i], e))
                    pos[i] = e
        for w in writers:
            w.close()
        writers = []
        if k > 1:
            pysam.cat("-o", path, *paths)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    finally:
        if k > 1:
            for p in paths:
                if os.path.exists(p):
                    os.unlink(p)


def concat_sorted_bams(path, parts):
    """Sorted BAMs holding consecutive stretches of the genome, end to end (samtools cat), indexed."""
    import pysam
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        pysam.cat("-o", tmp, *parts)
        pysam.index(tmp, tmp + ".bai")
        os.replace(tmp + ".bai", path + ".bai")
        os.replace(tmp, path)
    finally:
        for p in [tmp, tmp + ".bai"] + list(parts):
            if os.path.exists(p):
                os.unlink(p)


def write_sorted_bam(path, header, reads, level=6, threads=1):
    """Sorted records into path with its .bai, both under temporary names first; the records'
    bytes are gathered (flags from reads.flag) a chunk at a time."""
    import pysam
    if os.path.isdir(path):
        raise InputError(f"-o {path}: is a directory")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise InputError(f"-o {path}: directory {d} does not exist")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write_sorted_records(tmp, header, reads, level, threads)
        pysam.index(tmp, tmp + ".bai")
        os.replace(tmp + ".bai", path + ".bai")
        os.replace(tmp, path)
    finally:
        for p in (tmp, tmp + ".bai"):
            if os.path.exists(p):
                os.unlink(p)


if __name__ == "__main__":
    run_cli(main, prog="kernels.markdup")
