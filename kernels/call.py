"""Variant calling: sort, mark duplicates, pile up and genotype SNPs and indels, per genomic region.

    python -m kernels.call REF IN.bam [IN2.bam ...] -o OUT.vcf.gz [--region CHR:START-END | --regions N]
                           [--bam-out OUT.bam] [-t THREADS] [--json]
    python -m kernels.call REF --parts P1.bam [P2.bam ...|@LIST] --regions-bed BED [--only I[-J]] -o OUT.vcf.gz
    mpiexec -n K python -m kernels.call ...      (ranks take regions; with --parts, blocks of them)

REF is the reference FASTA (bgzip or plain with a .fai: only the bases near the regions called
are read) or the genefarm index (its decoded bases, memory-mapped): kernels.reference.
Input: the aligner's BAM (unsorted), any BAM, or the aligner's part files (kernels.partfile): of
those only the groups of the regions called and of their neighbours' edges are read, so a
region's task holds that region's reads, whatever the size of the sample. @LIST is a file naming
one part file per line. Records are put in one
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

from kernels import mpiwork, partfile, qualcal
from kernels import vcf as V
from kernels._numba import note_compile, set_threads
from kernels.bamheader import (check_headers, check_reference, check_sorted, libraries, sample_name,
                               sorted_header_bytes)
from kernels.bamread import concat, read_bams, read_parts
from kernels.caller import Caller, Unloaded
from kernels.errors import InputError, run_cli
from kernels.markdup import (concat_sorted_bams, mark_duplicates, sort_order, with_dup_flags, write_sorted_bam,
                             write_sorted_records)
from kernels.reference import open_reference
from kernels.regions import Interval, parse_region, read_regions, split_genome

MAX_BQ = 40              # reported base qualities are trusted up to this at most (see --max-bq)
TILE = 1_000_000


def tiles(region):
    """A region's intervals cut into tiles of at most TILE bases (the unit of work of a thread)."""
    out = []
    for iv in region:
        for a in range(iv.start, iv.end, TILE):
            out.append(Interval(iv.chrom, a, min(iv.end, a + TILE)))
    return out


def _finish(reads, libs):
    """Sort, mark duplicates: (reads, duplicates)."""
    reads = reads.take(sort_order(reads))
    dup = mark_duplicates(reads, libs)
    reads.flag = with_dup_flags(reads.flag, dup)
    return reads, int(dup.sum())


def _reach(reads):
    return int((reads.uend - reads.ustart).max()) if reads.n else 0


def load_bams(ref, ref_path, inputs):
    """Merged header and the records of the BAM inputs, sorted, duplicates marked, the number of
    duplicates, and the longest unclipped read seen. Every file is inflated into one buffer, so
    that joining them copies no record bytes."""
    hdr = check_headers(inputs)
    check_reference(hdr, ref, inputs[0], ref_path)
    ids, libs = libraries(hdr)
    got, _, _ = read_bams(inputs, ids)
    for p, (r, h) in zip(inputs, got):
        check_sorted(p, h, r)
    reads = concat([r for r, _ in got])
    reach = _reach(reads)
    reads, ndup = _finish(reads, libs)
    return hdr, reads, ndup, reach


def load_parts(ref, ref_path, parts, groups, hdr):
    """The records of the given groups of the part files, sorted, duplicates marked."""
    ids, libs = libraries(hdr)
    reads = read_parts(parts, groups, ids)
    reach = _reach(reads)
    reads, ndup = _finish(reads, libs)
    return reads, ndup, reach


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


def trusted_extent(span, lengths, tid_of, reach):
    """{tid: (a, b)}: positions whose reads (and their duplicate marks) are all loaded. Within
    2 x the longest read of a cut in the middle of a contig, a duplicate's copy could lie beyond."""
    ext = {}
    for c, (a, b) in span.items():
        ext[tid_of[c]] = (a if a == 0 else a + 2 * reach, b if b == lengths[c] else b - 2 * reach)
    return ext


def region_weights(parts, nreg):
    """Compressed bytes of each region's records over the part files (what a rank will read)."""
    w = np.zeros(nreg, np.float64)
    for p in parts:
        per_group = np.zeros(len(p.groups) - 1, np.float64)
        rows = np.repeat(np.arange(len(p.groups) - 1), np.diff(np.asarray(p.groups)))
        np.add.at(per_group, rows, np.asarray(p.blocks[:, 1], np.float64))
        w += per_group[:3 * nreg].reshape(-1, 3).sum(1)
    return w


def parse_only(text, nreg):
    """--only I or I-J (0-based region numbers of the BED, J included) -> (lo, hi)."""
    try:
        a, _, b = text.partition("-")
        lo, hi = int(a), int(b or a) + 1
    except ValueError:
        raise InputError(f"--only {text!r}: give a region number or a range I-J (0-based rows of --regions-bed)") from None
    if not 0 <= lo < hi <= nreg:
        raise InputError(f"--only {text!r}: the regions BED has {nreg} regions (0..{nreg - 1})")
    return lo, hi


def run(ref_path, inputs, out, region=None, nregions=None, bam_out=None, threads=1, argv=None, max_bq=MAX_BQ,
        qual_counts=None, parts=None, regions_bed=None, only=None, all_contigs=False):
    """Call variants; rank 0 writes out (bgzipped VCF + .tbi) and returns a summary dict.

    Input is either `inputs` (BAM files; with K ranks every rank reads all of them and takes every
    K-th region) or `parts` (part files) with the regions_bed they were written for: the regions
    `only` (lo, hi) or all; a rank takes a contiguous block of them (blocks balanced by the bytes
    of their records) and reads only its groups, so K ranks share the reading too."""
    comm, rank, size = mpiwork.world()
    t0 = time.perf_counter()
    for o in (out, bam_out):
        if o and not os.path.isdir(os.path.dirname(os.path.abspath(o))):
            raise InputError(f"{o}: its directory does not exist")
    if not out.endswith(".gz"):
        raise InputError(f"-o {out}: the VCF is bgzipped and indexed: name it .vcf.gz")
    set_threads(threads)
    ref = open_reference(ref_path)
    lengths = dict(zip(ref.names, (int(x) for x in ref.lengths)))
    tid_of = {n: i for i, n in enumerate(ref.names)}
    extent, span, pfiles = None, None, None
    if parts:
        _, _, reglist = read_regions(regions_bed, ref.names, ref.lengths)
        pfiles = [partfile.PartFile(p) for p in parts]
        for p in pfiles:
            p.check_regions(reglist)
        flank = pfiles[0].meta["flank"]
        lo_all, hi_all = only if only else (0, len(reglist))
        regions = [[Interval(c, a, b)] for c, a, b in reglist]
        w = region_weights(pfiles, len(reglist))[lo_all:hi_all]
        lo, hi = [(lo_all + a, lo_all + b) for a, b in balanced_blocks(w, size)][rank]
        mine = list(range(lo, hi))
        hdr = check_headers(parts)
        check_reference(hdr, ref, parts[0], ref_path)
        groups = partfile.block_groups(reglist, lo, hi, flank)
        whole_genome = (lo_all, hi_all) == (0, len(reglist))
        with_unmapped = bool(bam_out) and whole_genome and rank == size - 1
        if with_unmapped:
            groups = groups + [3 * len(reglist)]            # the pairs with no position go at the BAM's end
        reads, ndup, reach = load_parts(ref, ref_path, pfiles, groups, hdr)
        if lo < hi:
            span = partfile.loaded_span(reglist, lo, hi, flank)
            extent = trusted_extent(span, lengths, tid_of, reach)
        first_input = parts[0]
    else:
        if region:
            regions = [[parse_region(region, lengths)]]
        else:
            regions = split_genome(ref.names, [lengths[n] for n in ref.names], nregions or 1)
        mine = [i for i in range(len(regions)) if i % size == rank]
        hdr, reads, ndup, reach = load_bams(ref, ref_path, inputs)
        with_unmapped = _whole(regions, ref)
        whole_genome = with_unmapped
        first_input = inputs[0]
    t1 = time.perf_counter()
    # quality counts: given, or of this rank's own regions summed over the ranks (parts), or of all
    if qual_counts:
        tot, mm = qualcal.read_counts(qual_counts)
    else:
        own = _in_regions(reads, tid_of, [regions[i] for i in mine]) if parts else None
        tot, mm = count_qualities(ref, reads, own)
        if parts and size > 1:
            tot, mm = comm.allreduce(tot), comm.allreduce(mm)       # the blocks partition the sample
    qerr = qualcal.table(tot, mm, max_bq)
    # variants are called on the primary assembly only: ALT, decoy and HLA contigs keep their reads
    # (in --bam-out) but get no records, unless all_contigs
    called = {n for n, k in zip(ref.names, ref.kinds) if all_contigs or k == "primary"}
    work = [(i, t) for i in mine for t in tiles(regions[i]) if t.chrom in called]
    try:
        done = call_tiles(Caller(ref, reads, qerr, extent), work, threads)
    except Unloaded as e:
        # a window wider than the neighbours' edges loaded: read every region of the block's contigs
        print(f"kernels.call: {e}; reading the whole contigs' groups", file=sys.stderr)
        reads_all, _, _ = load_parts(ref, ref_path, pfiles, partfile.block_groups(reglist, lo, hi, flank, True), hdr)
        done = call_tiles(Caller(ref, reads_all, qerr), work, threads)
        del reads_all
    lines = [(i, res[0]) for (i, _), res in zip(work, done)]
    nsites = sum(res[1] for res in done)
    nrec = int(reads.n)
    bam_part = None
    if bam_out and size > 1 and parts:
        # each rank writes the sorted records of its block (the last one the unmapped pairs too)
        bam_part = f"{bam_out}.rank{rank}.tmp"
        write_sorted_records(bam_part, sorted_header_bytes(hdr, argv),
                             reads.take(np.flatnonzero(_bam_records(reads, tid_of, [regions[i] for i in mine],
                                                                    with_unmapped))), threads=threads)
    mine_s = [round(t1 - t0, 3), round(time.perf_counter() - t1, 3)]       # this rank's load, call
    per_rank = [mine_s]
    gathered = None
    if size > 1:
        gathered = comm.gather((lines, nsites, nrec, ndup, bam_part, mine_s, ref.loaded_bases), root=0)
        if rank != 0:
            return None
        lines = sorted((x for g in gathered for x in g[0]), key=lambda x: x[0])
        nsites = sum(g[1] for g in gathered)
        per_rank = [g[5] for g in gathered]
        if parts:                 # records were read by their block's rank (and its neighbours)
            nrec, ndup = None, None
    t2 = time.perf_counter()
    body = [ln for _, ls in lines for ln in ls]
    cmd = " ".join(shlex.quote(a) for a in (argv or sys.argv))
    V.write(out, V.header(list(lengths.items()), sample_name(hdr, first_input), ref_path, cmd) +
            "".join(ln + "\n" for ln in body))
    if bam_out:
        if size > 1 and parts:
            concat_sorted_bams(bam_out, [g[4] for g in gathered])
        else:
            sel = [regions[i] for i in mine] if parts else regions
            write_sorted_bam(bam_out, sorted_header_bytes(hdr, argv),
                             reads.take(np.flatnonzero(_bam_records(reads, tid_of, sel, with_unmapped))),
                             threads=threads)
    t3 = time.perf_counter()
    snp = sum(1 for ln in body if _is_snp(ln))
    passed = [ln for ln in body if ln.split("\t", 7)[6] == "PASS"]
    return {"records": nrec, "duplicates": ndup, "candidate_sites": nsites, "variants": len(body),
            "pass": len(passed), "snps_pass": sum(1 for ln in passed if _is_snp(ln)),
            "indels_pass": sum(1 for ln in passed if not _is_snp(ln)), "snps": snp, "indels": len(body) - snp,
            "regions": (hi_all - lo_all) if parts else len(regions),
            "ranks": size, "threads": threads, "vcf": os.path.abspath(out),
            "bam": os.path.abspath(bam_out) if bam_out else None,
            "reference": {"read_as": ref.how, "bases_loaded": int(ref.loaded_bases)},
            "seconds": {"load_sort_markdup": round(t1 - t0, 3), "call": round(t2 - t1, 3),
                        "write": round(t3 - t2, 3), "total": round(t3 - t0, 3),
                        "ranks_load_call": per_rank}}


def call_tiles(caller, work, threads):
    """caller.interval of every (region index, tile) of work, on `threads` threads, in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        return list(ex.map(lambda w: caller.interval(w[1]), work))


def count_qualities(ref, reads, only=None):
    """Base quality calibration counts (kernels.qualcal) over the reads (only those marked in `only`);
    the reference is loaded where the counted reads lie."""
    tot, mm = qualcal.new_counts()
    sel = qualcal.counted(reads.flag, reads.mapq, reads.namehash)
    if only is not None:
        sel &= only
    idx = np.flatnonzero(sel)
    tids = reads.tid[idx]
    for t in np.unique(tids[tids >= 0]):
        on = idx[tids == t]
        ref.load(int(t), int(reads.pos[on].min()) - 16, int(reads.end[on].max()) + 16)
    qualcal.count_errors(reads.raw, reads.roff, idx, reads.pos, reads.flag, ref.seq, ref.offsets,
                         reads.tid, tot, mm)
    return tot, mm


def _whole(regions, ref):
    return sum(len(iv) for reg in regions for iv in reg) == int(ref.lengths.sum())


def _bam_records(reads, tid_of, regions, with_unmapped):
    """Records of the regions (and, when asked, the records with no position, which go at the
    BAM's end)."""
    keep = _in_regions(reads, tid_of, regions)
    if with_unmapped:
        keep |= reads.tid < 0
    return keep


def _in_regions(reads, tid_of, regions):
    """Records whose position lies in the regions (reads are sorted: each interval is a slice)."""
    keep = np.zeros(reads.n, np.bool_)
    placed = int((reads.tid >= 0).sum())
    tkey = reads.tid[:placed].astype(np.int64) << 40 | reads.pos[:placed]
    for reg in regions:
        for iv in reg:
            t = np.int64(tid_of[iv.chrom]) << 40
            a = int(np.searchsorted(tkey, t | iv.start, "left"))
            b = int(np.searchsorted(tkey, t | iv.end, "left"))
            keep[a:b] = True
    return keep


def _is_snp(line):
    f = line.split("\t", 5)
    return len(f[3]) == 1 and all(len(a) == 1 for a in f[4].split(","))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.call", fromfile_prefix_chars="@",
                                 description="Sort, mark duplicates and call SNPs and indels; writes VCF.gz + .tbi.")
    ap.add_argument("reference", help="the reference the reads were aligned to: a FASTA (bgzip or plain with a .fai "
                                      "is read only where needed) or the genefarm index prefix")
    ap.add_argument("inputs", nargs="*", help="BAM files (any order; unsorted is fine)")
    ap.add_argument("-o", "--output", required=True, help="output VCF (bgzipped, with a .tbi index)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--region", help="call only CHR:START-END (1-based, inclusive; {NAME}:START-END for a name "
                                        "holding ':')")
    where.add_argument("--regions", type=int, help="call the whole genome split into N regions (ranks take regions)")
    where.add_argument("--parts", nargs="+", metavar="PART",
                       help="the aligner's part files (kernels.align --parts), or @FILE listing them one per line; "
                            "with --regions-bed: only the groups of the regions called are read")
    ap.add_argument("--regions-bed", metavar="BED", help="with --parts: the regions the parts were written for")
    ap.add_argument("--only", metavar="I[-J]", help="with --parts: call regions I..J of the BED (0-based rows; "
                                                    "default all)")
    ap.add_argument("--bam-out", help="also write the sorted, duplicate-marked records (of the regions) as BAM + .bai")
    ap.add_argument("--all-contigs", action="store_true",
                    help="call ALT, decoy and HLA contigs too (by default only the primary assembly is called; "
                         "their reads are in --bam-out either way)")
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads per rank (default 1)")
    ap.add_argument("--max-bq", type=int, default=MAX_BQ,
                    help=f"trust a reported base quality up to this at most (default {MAX_BQ}); below it, "
                         f"the error rate of each quality is measured on the sample")
    ap.add_argument("--qual-counts", nargs="+", metavar="FILE",
                    help="base quality counts of the whole sample (kernels.align --qual-counts, one per chunk, or "
                         "@FILE listing them): a sample called region by region then gets the same calls as called whole")
    ap.add_argument("--json", action="store_true", help="print a summary as JSON on stdout")
    ap.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    a = ap.parse_args(argv)
    if a.threads < 1:
        raise InputError(f"-t {a.threads}: need at least one thread")
    if not a.quiet:
        note_compile()
    if bool(a.parts) != bool(a.regions_bed):
        raise InputError("--parts and --regions-bed go together (the part files and the regions they hold)")
    if a.only and not a.parts:
        raise InputError("--only chooses regions of --regions-bed: give it with --parts")
    if bool(a.parts) == bool(a.inputs):
        raise InputError("give the BAM files, or --parts PART... --regions-bed BED (not both)")
    only = None
    if a.only:
        from kernels.reference import contigs_of
        names, lens = zip(*contigs_of(a.reference))
        only = parse_only(a.only, len(read_regions(a.regions_bed, list(names), list(lens))[2]))
    res = run(a.reference, a.inputs, a.output, a.region, a.regions, a.bam_out, a.threads,
              argv=["python -m kernels.call"] + (argv if argv is not None else sys.argv[1:]), max_bq=a.max_bq,
              qual_counts=a.qual_counts, parts=a.parts, regions_bed=a.regions_bed, only=only,
              all_contigs=a.all_contigs)
    if res is None:
        return 0
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    if not a.quiet:
        recs = f"{res['records']:,} records ({res['duplicates']:,} duplicates): " if res["records"] is not None else ""
        print(f"{recs}{res['pass']:,} variants PASS "
              f"({res['snps_pass']:,} SNPs, {res['indels_pass']:,} indels), {res['variants'] - res['pass']:,} LowQual, "
              f"in {res['seconds']['total']:.1f} s -> {a.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.call")
