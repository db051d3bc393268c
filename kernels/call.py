"""Variant calling: sort, mark duplicates, pile up and genotype SNPs and indels, per genomic region.

    python -m kernels.call REF.fa IN.bam [IN2.bam ...] -o OUT.vcf.gz [--region CHR:START-END | --regions N]
                           [--bam-out OUT.bam] [-t THREADS] [--json]
    python -m kernels.call REF.fa --parts PREFIX --regions-bed BED -o OUT.vcf.gz [--neighbour-flank BASES]
    mpiexec -n K python -m kernels.call ...      (ranks take regions; with --parts, blocks of them)

Input: the aligner's BAM (unsorted) or its part files, or any BAM. Records are put in one
canonical order (markdup.sort_order) and duplicates marked once over all of them, then every
region is called in tiles. A tile reads a flank of its neighbours, so that a variant near its
edge is called from the same reads as anywhere else; a variant is written by the tile holding
its POS. The result does not depend on the regions or tiles (tested record for record).

Per tile:
1. pileup (pileup.py) of the usable reads: not duplicates, mapped, primary, MAPQ >= MIN_MQ;
2. candidate alleles: a base other than the reference on >= MIN_ALT reads and >= MIN_ALT_FRAC of
   the depth; an indel (left-normalised) on as many; nothing where the reference is N;
3. alleles closer than HAP_NEAR form a component; a component with an indel is a window whose
   alleles are genotyped together: every compatible set of them is a haplotype, the reads are
   realigned to each (genotype.hap_scores), a pair of haplotypes is the diploid genotype, and a
   site's genotype is the marginal over the pairs. The SNPs of other components are genotyped
   from the pileup (genotype.snp_likelihoods);
4. posterior with a heterozygosity prior, QUAL, GQ, PL; FILTER PASS at QUAL >= 10, else LowQual;
   alleles the genotype does not use are dropped and the record trimmed to its minimal form.
"""
import argparse
import concurrent.futures
import json
import os
import shlex
import sys
import time

import numpy as np

from kernels import mpiwork, qualcal
from kernels import vcf as V
from kernels._numba import note_compile
from kernels.bamheader import (check_headers, check_reference, check_sorted, libraries, sample_name,
                               sorted_header_bytes)
from kernels.bamread import concat, place, read_bam, read_bams
from kernels.caller import Caller, Unloaded
from kernels.errors import InputError, run_cli
from kernels.fasta import read_fasta
from kernels.markdup import (concat_sorted_bams, mark_duplicates, sort_order, with_dup_flags, write_sorted_bam,
                             write_sorted_records)
from kernels.regions import Interval, parse_region, part_paths, read_regions, split_genome

MAX_BQ = 40              # reported base qualities are trusted up to this at most (see --max-bq)
TILE = 1_000_000
NEIGHBOUR_FLANK = 100_000    # --parts: bases of a neighbouring region's reads a block of regions loads


# ---------------------------------------------------------------- driver and CLI

def tiles(region):
    """A region's intervals cut into tiles of at most TILE bases (the unit of work of a thread)."""
    out = []
    for iv in region:
        for a in range(iv.start, iv.end, TILE):
            out.append(Interval(iv.chrom, a, min(iv.end, a + TILE)))
    return out


def load(ref, ref_path, inputs, keep=None):
    """Merged header and the records of the inputs, sorted, duplicates marked (in `flag`), the
    number of duplicates, and the longest unclipped read seen. keep: one per input, None (all its
    records) or an Interval (only the records placed in it)."""
    hdr = check_headers(inputs)
    check_reference(hdr, ref, inputs[0], ref_path)
    ids, libs = libraries(hdr)
    tid_of = {n: i for i, n in enumerate(ref.names)}
    keep = keep or [None] * len(inputs)
    reach = 0

    def checked(p, r, h):
        nonlocal reach
        check_sorted(p, h, r)
        if r.n:
            reach = max(reach, int((r.uend - r.ustart).max()))
        return r
    # the neighbours' reads near the block first (few), then every whole file inflated into one
    # buffer with room for them at its end: joining them copies no record bytes
    near = []
    for p, k in zip(inputs, keep):
        if k is not None:
            r = checked(p, *read_bam(p, ids))
            near.append(r.take(np.flatnonzero((r.tid == tid_of[k.chrom]) & (r.pos >= k.start) &
                                              (r.pos < k.end))).compact())
    whole = [p for p, k in zip(inputs, keep) if k is None]
    got, buf, at = read_bams(whole, ids, spare=sum(len(r.raw) for r in near))
    parts = [checked(p, r, h) for p, (r, h) in zip(whole, got)]
    for r in near:
        parts.append(place(r, buf, at))
        at += len(r.raw)
    reads = concat(parts)
    reads = reads.take(sort_order(reads))
    dup = mark_duplicates(reads, libs)
    reads.flag = with_dup_flags(reads.flag, dup)
    return hdr, reads, int(dup.sum()), reach


def balanced_blocks(weights, k):
    """len(weights) items cut into k contiguous blocks [lo, hi), block j ending where the running
    total of the weights comes nearest to (j + 1)/k of the whole; no block is empty while there
    are as many items as blocks."""
    n = len(weights)
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(weights, np.float64))])
    if cum[-1] <= 0:
        cum = np.arange(n + 1, dtype=np.float64)
    cuts = [0]
    for j in range(1, k):
        lo = min(n, cuts[-1] + (1 if n >= k else 0))
        hi = max(lo, n - (k - j) if n >= k else n)
        c = lo + int(np.argmin(np.abs(cum[lo:hi + 1] - cum[-1] * j / k)))
        cuts.append(c)
    cuts.append(n)
    return list(zip(cuts[:-1], cuts[1:]))


def block_inputs(reglist, paths, lo, hi, flank=NEIGHBOUR_FLANK):
    """What a rank taking regions [lo, hi) of the parts reads: (paths, keep) for load(), and
    {contig: (a, b)}, the loaded span of each contig the block touches. The neighbouring region on
    each side (in the same contig) is read for its reads within `flank` bases of the block."""
    if lo == hi:
        return [], [], {}
    inputs, keep = list(paths[lo:hi]), [None] * (hi - lo)
    span = {}
    for c, a, b in reglist[lo:hi]:
        s = span.setdefault(c, [a, b])
        s[0], s[1] = min(s[0], a), max(s[1], b)
    c0, a0, _ = reglist[lo]
    if lo > 0 and reglist[lo - 1][0] == c0:
        pa = max(reglist[lo - 1][1], a0 - flank)
        inputs.append(paths[lo - 1])
        keep.append(Interval(c0, pa, a0))
        span[c0][0] = pa
    c1, _, b1 = reglist[hi - 1]
    if hi < len(reglist) and reglist[hi][0] == c1:
        pb = min(reglist[hi][2], b1 + flank)
        inputs.append(paths[hi])
        keep.append(Interval(c1, b1, pb))
        span[c1][1] = pb
    return inputs, keep, span


def trusted_extent(span, lengths, tid_of, reach):
    """{tid: (a, b)}: positions whose reads (and their duplicate marks) are all loaded. Within
    2 x the longest read of a cut in the middle of a contig, a duplicate's copy could lie beyond."""
    ext = {}
    for c, (a, b) in span.items():
        ext[tid_of[c]] = (a if a == 0 else a + 2 * reach, b if b == lengths[c] else b - 2 * reach)
    return ext


def run(ref_path, inputs, out, region=None, nregions=None, bam_out=None, threads=1, argv=None, max_bq=MAX_BQ,
        qual_counts=None, parts_prefix=None, regions_bed=None, flank=NEIGHBOUR_FLANK):
    """Call variants; rank 0 writes out (bgzipped VCF + .tbi) and returns a summary dict.

    Input is either `inputs` (BAM files; with K ranks every rank reads all of them and takes every
    K-th region) or, with parts_prefix and regions_bed, the aligner's part files: a rank then takes
    a contiguous block of the regions (blocks balanced by the parts' sizes) and reads only their
    parts, and of the parts beyond its block's ends the reads near them (block_inputs), so K ranks
    share the reading too."""
    comm, rank, size = mpiwork.world()
    t0 = time.perf_counter()
    for o in (out, bam_out):
        if o and not os.path.isdir(os.path.dirname(os.path.abspath(o))):
            raise InputError(f"{o}: its directory does not exist")
    if not out.endswith(".gz"):
        raise InputError(f"-o {out}: the VCF is bgzipped and indexed: name it .vcf.gz")
    ref = read_fasta(ref_path)
    lengths = dict(zip(ref.names, (int(x) for x in ref.lengths)))
    if parts_prefix:
        _, _, reglist = read_regions(regions_bed, ref.names, ref.lengths)
        regions = [[Interval(c, a, b)] for c, a, b in reglist]
        paths = part_paths(parts_prefix, len(regions))
        lo, hi = balanced_blocks([_size(p) for p in paths[:-1]], size)[rank]
        mine = list(range(lo, hi))
        inputs, keep, span = block_inputs(reglist, paths, lo, hi, flank)
        if bam_out and rank == size - 1:
            inputs, keep = inputs + [paths[-1]], keep + [None]     # the unmapped pairs go at the BAM's end
        if not inputs:                                             # more ranks than regions
            inputs, keep = [paths[0]], [Interval(reglist[0][0], 0, 0)]
    else:
        if region:
            regions = [[parse_region(region, lengths)]]
        else:
            regions = split_genome(ref.names, [lengths[n] for n in ref.names], nregions or 1)
        mine = [i for i in range(len(regions)) if i % size == rank]
        keep, span = None, None
    hdr, reads, ndup, reach = load(ref, ref_path, inputs, keep)
    t1 = time.perf_counter()
    # quality counts: given, or of this rank's own regions summed over the ranks (parts), or of all
    if qual_counts:
        tot, mm = qualcal.read_counts(qual_counts)
    else:
        own = None
        if parts_prefix:
            own = _in_regions(reads, ref, [regions[i] for i in mine])
        tot, mm = count_qualities(ref, reads, own)
        if parts_prefix and size > 1:
            tot, mm = comm.allreduce(tot), comm.allreduce(mm)       # the blocks partition the sample
    qerr = qualcal.table(tot, mm, max_bq)
    work = [(i, t) for i in mine for t in tiles(regions[i])]
    extent = trusted_extent(span, lengths, {n: i for i, n in enumerate(ref.names)}, reach) if span is not None else None
    try:
        done = call_tiles(Caller(ref, reads, qerr, extent), work, threads)
    except Unloaded as e:
        # a window wider than the neighbours' reads loaded: read every part of the block's contigs
        print(f"kernels.call: {e}; reading the whole contigs' parts", file=sys.stderr)
        whole = [p for p, (c, _, _) in zip(paths, reglist) if c in span]
        _, reads_all, _, _ = load(ref, ref_path, whole)
        done = call_tiles(Caller(ref, reads_all, qerr), work, threads)
        del reads_all
    lines = [(i, res[0]) for (i, _), res in zip(work, done)]
    nsites = sum(res[1] for res in done)
    nrec = int(reads.n)
    bam_part = None
    if bam_out and size > 1 and parts_prefix:
        # each rank writes the sorted records of its block (the last one the unmapped pairs too)
        bam_part = f"{bam_out}.rank{rank}.tmp"
        write_sorted_records(bam_part, sorted_header_bytes(hdr, argv),
                             reads.take(np.flatnonzero(_bam_records(reads, ref, [regions[i] for i in mine],
                                                                    rank == size - 1))), threads=threads)
    mine_s = [round(t1 - t0, 3), round(time.perf_counter() - t1, 3)]       # this rank's load, call
    per_rank = [mine_s]
    if size > 1:
        gathered = comm.gather((lines, nsites, nrec, ndup, bam_part, mine_s), root=0)
        if rank != 0:
            return None
        lines = sorted((x for g in gathered for x in g[0]), key=lambda x: x[0])
        nsites = sum(g[1] for g in gathered)
        per_rank = [g[5] for g in gathered]
        if parts_prefix:                 # records were read by their block's rank (and its neighbours)
            nrec, ndup = None, None
    t2 = time.perf_counter()
    body = [ln for _, ls in lines for ln in ls]
    cmd = " ".join(shlex.quote(a) for a in (argv or sys.argv))
    V.write(out, V.header(list(lengths.items()), sample_name(hdr, inputs[0]), ref_path, cmd) +
            "".join(ln + "\n" for ln in body))
    if bam_out:
        if size > 1 and parts_prefix:
            concat_sorted_bams(bam_out, [g[4] for g in gathered])
        else:
            write_sorted_bam(bam_out, sorted_header_bytes(hdr, argv),
                             reads.take(np.flatnonzero(_bam_records(reads, ref, regions, _whole(regions, ref)))),
                             threads=threads)
    t3 = time.perf_counter()
    snp = sum(1 for ln in body if _is_snp(ln))
    passed = [ln for ln in body if ln.split("\t", 7)[6] == "PASS"]
    return {"records": nrec, "duplicates": ndup, "candidate_sites": nsites, "variants": len(body),
            "pass": len(passed), "snps_pass": sum(1 for ln in passed if _is_snp(ln)),
            "indels_pass": sum(1 for ln in passed if not _is_snp(ln)), "snps": snp, "indels": len(body) - snp,
            "regions": len(regions), "ranks": size, "threads": threads, "vcf": os.path.abspath(out),
            "bam": os.path.abspath(bam_out) if bam_out else None,
            "seconds": {"load_sort_markdup": round(t1 - t0, 3), "call": round(t2 - t1, 3),
                        "write": round(t3 - t2, 3), "total": round(t3 - t0, 3),
                        "ranks_load_call": per_rank}}


def call_tiles(caller, work, threads):
    """caller.interval of every (region index, tile) of work, on `threads` threads, in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        return list(ex.map(lambda w: caller.interval(w[1]), work))


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0                     # missing: load() says so


def count_qualities(ref, reads, only=None):
    """Base quality calibration counts (kernels.qualcal) over the reads (only those marked in `only`)."""
    tot, mm = qualcal.new_counts()
    sel = qualcal.counted(reads.flag, reads.mapq, reads.namehash)
    if only is not None:
        sel &= only
    qualcal.count_errors(reads.raw, reads.roff, np.flatnonzero(sel), reads.pos, reads.flag, ref.seq, ref.offsets,
                         reads.tid, tot, mm)
    return tot, mm


def _whole(regions, ref):
    return sum(len(iv) for reg in regions for iv in reg) == int(ref.lengths.sum())


def _bam_records(reads, ref, regions, with_unmapped):
    """Records of the regions (and, when asked and the regions cover the genome, the records with
    no position, which go at the BAM's end)."""
    keep = _in_regions(reads, ref, regions)
    if with_unmapped:
        keep |= reads.tid < 0
    return keep


def _in_regions(reads, ref, regions):
    """Records whose position lies in the regions."""
    keep = np.zeros(reads.n, np.bool_)
    tid_of = {n: i for i, n in enumerate(ref.names)}
    for reg in regions:
        for iv in reg:
            keep |= (reads.tid == tid_of[iv.chrom]) & (reads.pos >= iv.start) & (reads.pos < iv.end)
    return keep


def _is_snp(line):
    f = line.split("\t", 5)
    return len(f[3]) == 1 and all(len(a) == 1 for a in f[4].split(","))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.call",
                                 description="Sort, mark duplicates and call SNPs and indels; writes VCF.gz + .tbi.")
    ap.add_argument("reference", help="reference FASTA (plain, gzip or bgzip) the reads were aligned to")
    ap.add_argument("inputs", nargs="*", help="BAM files: the aligner's output or part files (any order)")
    ap.add_argument("-o", "--output", required=True, help="output VCF (bgzipped, with a .tbi index)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--region", help="call only CHR:START-END (1-based, inclusive)")
    where.add_argument("--regions", type=int, help="call the whole genome split into N regions (ranks take regions)")
    where.add_argument("--parts", metavar="PREFIX",
                       help="read the aligner's part files PREFIX.rNNNN.bam (kernels.align --parts) of the regions in "
                            "--regions-bed; ranks take blocks of regions and read only their parts")
    ap.add_argument("--regions-bed", metavar="BED", help="with --parts: the regions the parts were written for")
    ap.add_argument("--neighbour-flank", type=int, default=NEIGHBOUR_FLANK, metavar="BASES",
                    help=f"with --parts and several ranks: of the regions next to a rank's block, read the reads "
                         f"within BASES of it (default {NEIGHBOUR_FLANK:,}; a window reaching further makes the "
                         f"rank read its contigs' parts whole)")
    ap.add_argument("--bam-out", help="also write the sorted, duplicate-marked records (of the region) as BAM + .bai")
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads per rank (default 1)")
    ap.add_argument("--max-bq", type=int, default=MAX_BQ,
                    help=f"trust a reported base quality up to this at most (default {MAX_BQ}); below it, "
                         f"the error rate of each quality is measured on the sample")
    ap.add_argument("--qual-counts", nargs="+", metavar="FILE",
                    help="base quality counts of the whole sample (kernels.align --qual-counts, one per chunk): "
                         "a sample called region by region then gets the same calls as called whole")
    ap.add_argument("--json", action="store_true", help="print a summary as JSON on stdout")
    ap.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    a = ap.parse_args(argv)
    if a.threads < 1:
        raise InputError(f"-t {a.threads}: need at least one thread")
    if a.neighbour_flank < 0:
        raise InputError(f"--neighbour-flank {a.neighbour_flank}: must be >= 0")
    if not a.quiet:
        note_compile()
    if bool(a.parts) != bool(a.regions_bed):
        raise InputError("--parts and --regions-bed go together (the part files and the regions they hold)")
    if bool(a.parts) == bool(a.inputs):
        raise InputError("give the BAM files, or --parts PREFIX --regions-bed BED (not both)")
    res = run(a.reference, a.inputs, a.output, a.region, a.regions, a.bam_out, a.threads,
              argv=["python -m kernels.call"] + (argv if argv is not None else sys.argv[1:]), max_bq=a.max_bq,
              qual_counts=a.qual_counts, parts_prefix=a.parts, regions_bed=a.regions_bed,
              flank=a.neighbour_flank)
    if res is None:
        return 0
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    if not a.quiet:
        print(f"{res['records']:,} records ({res['duplicates']:,} duplicates): {res['pass']:,} variants PASS "
              f"({res['snps_pass']:,} SNPs, {res['indels_pass']:,} indels), {res['variants'] - res['pass']:,} LowQual, "
              f"in {res['seconds']['total']:.1f} s -> {a.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.call")
