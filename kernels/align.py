"""Short-read alignment, paired-end or single-end: seeds -> loci -> extension -> placement -> BAM.

    python -m kernels.align PREFIX R1.fq[.gz] [R2.fq[.gz]] -o OUT.bam [-t THREADS] [-R '@RG\\tID:x\\tSM:y']
    python -m kernels.align PREFIX R1 [R2] --regions REGIONS.bed --parts OUT.bam    (one part file)
    mpiexec -n K python -m kernels.align ...      (ranks split the batches; same records as 1 rank)

One FASTQ is single-end, two are the mates of pairs. Reads go in batches (fixed size, so the
output does not depend on ranks or threads); each batch goes through kernels.aligner (candidates,
the batch's insert-size model, placements, records), and its records are handed to the BGZF
writer (a child process) while the next batch aligns. Every output is written under a temporary
name and renamed when complete.

With -o, the records go to one BAM in input order; with K ranks each batch goes to the rank that
asks for it first, which writes it as one BGZF file, and rank 0 joins them in batch order.
With --regions/--parts, the records go to one part file (kernels.partfile), grouped by the
region each read starts in; with K ranks each rank writes its own and rank 0 merges them group
by group. Rank 0 reads the input once and hands batches to whichever rank asks (kernels.mpiwork).
The aligner keeps one output file open, whatever the number of regions.
"""
import argparse
import json
import os
import shlex
import shutil
import sys
import time

import numpy as np

from kernels import __version__
from kernels import bam, index as gindex, mpiwork, partfile, qualcal
from kernels._numba import note_compile, set_threads
from kernels.aligner import Aligner, Stats, parse_rg
from kernels.errors import InputError, run_cli
from kernels.fastq import FastqReader
from kernels.parts import PartWriter, group_of_reads, group_records
from kernels.regions import read_regions

BATCH_PAIRS = 10000


def _reader(r1, r2, batch_pairs, phred64):
    # a batch is batch_pairs pairs, or as many reads single-end (2 x batch_pairs)
    return lambda: FastqReader(r1, r2, batch_pairs if r2 else 2 * batch_pairs, guided=True, phred64=phred64)


def _fail_ranks(e, comm, rank, size):
    if size > 1 and not isinstance(e, InputError):
        # bad input stops every rank at the same record; anything else happened on this rank
        # only, and the others would wait for it forever
        import traceback
        traceback.print_exc()
        print(f"kernels.align: rank {rank} failed; aborting all {size} ranks", file=sys.stderr)
        comm.Abort(1)


def run(prefix, r1, r2, out, threads=1, rg=None, reference=None, batch_pairs=BATCH_PAIRS, level=1,
        argv=None, progress=None, regions=None, parts_out=None, qual_counts=None, phred64=False,
        flank=partfile.FLANK):
    """Align R1 (and R2) with the index at prefix into out (BAM), or with regions (a BED tiling the
    genome) into the part file parts_out. Returns the summary dict (rank 0)."""
    if regions:
        return run_parts(prefix, r1, r2, regions, parts_out, threads, rg, reference, batch_pairs, level,
                         argv, progress, qual_counts, phred64, flank)
    comm, rank, size = mpiwork.world()
    t0 = time.perf_counter()
    _check_out(out, "-o")
    idx, header, rg_arr = _setup(prefix, rg, reference, threads, argv)
    aligner = Aligner(idx)
    stats = Stats()
    counts = list(qualcal.new_counts())
    tmp = f"{out}.tmp{os.getpid()}"
    # the batches' files, in a directory of this run's own (a killed run's leftovers are never merged)
    parts = comm.bcast(f"{out}.parts.tmp{os.getpid()}" if rank == 0 else None, root=0) if size > 1 else None
    writer = None
    try:
        if size > 1:
            if rank == 0:
                os.makedirs(parts, exist_ok=True)
            comm.Barrier()
        writer = bam.BamWriter(level)
        if size == 1:
            writer.open(tmp, header)
        for b, batch in mpiwork.batches(_reader(r1, r2, batch_pairs, phred64), comm, rank, size):
            aln, model, data, sizes = aligner.align_encode(batch, rg_arr, counts if qual_counts else None)
            if size > 1:
                writer.open(os.path.join(parts, f"part-{b:07d}.bgzf"), b"")   # records only
                writer.write(data)
                writer.close_file()
            else:
                writer.write(data)
            stats.add(aln, model, batch.paired)
            if progress:
                progress(stats)
        writer.close()
        writer = None
        if size > 1:
            allstats = comm.gather((stats, counts), root=0)
            if rank == 0:
                _merge_stats(stats, counts, allstats)
                files = sorted(os.listdir(parts))
                bam.concat_records(tmp, header, [os.path.join(parts, f) for f in files], level)
                shutil.rmtree(parts, ignore_errors=True)
        if rank == 0:
            if qual_counts:
                qualcal.write_counts(qual_counts, *counts)
            os.replace(tmp, out)
        if size > 1:
            comm.Barrier()
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if os.path.exists(tmp):
            os.unlink(tmp)
        if parts and (rank == 0 or not isinstance(e, InputError)):
            shutil.rmtree(parts, ignore_errors=True)
        _fail_ranks(e, comm, rank, size)
        raise
    res = stats.summary()
    res.update(seconds=round(time.perf_counter() - t0, 3), ranks=size, threads=threads, bam=os.path.abspath(out),
               paired=r2 is not None)
    return res if rank == 0 else None


def _merge_stats(stats, counts, allstats):
    for s, c in allstats[1:]:
        stats.merge(s)
        counts[0] += c[0]
        counts[1] += c[1]


def _check_out(out, opt):
    if os.path.isdir(out):
        raise InputError(f"{opt} {out}: is a directory; give the BAM file's path")
    outdir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(outdir):
        raise InputError(f"{opt} {out}: directory {outdir} does not exist")


def _setup(prefix, rg, reference, threads, argv):
    """Index, header bytes, read-group array: what both kinds of output need."""
    set_threads(threads)
    rg_line, rg_id = parse_rg(rg)
    idx = gindex.load(prefix)
    if reference:
        gindex.check_reference(idx, reference)
    cl = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv))
    pg = f"@PG\tID:genefarm-align\tPN:genefarm-align\tVN:{__version__}\tCL:{cl}"
    text = bam.header_text(idx.names, idx.lengths, [c["m5"] for c in idx.meta["contigs"]], rg_line, pg)
    header = bam.header_bytes(text, idx.names, idx.lengths)
    rg_arr = np.frombuffer(rg_id.encode(), np.uint8).copy() if rg_id else np.empty(0, np.uint8)
    return idx, header, rg_arr


def run_parts(prefix, r1, r2, regions, parts_out, threads=1, rg=None, reference=None,
              batch_pairs=BATCH_PAIRS, level=1, argv=None, progress=None, qual_counts=None, phred64=False,
              flank=partfile.FLANK):
    """--regions/--parts: every read goes into the group of the region holding its position (a
    read placed at its unmapped mate's position too); pairs with no position to the last group.
    With K ranks the part file holds the same records as with one rank, in each group by rank."""
    comm, rank, size = mpiwork.world()
    t0 = time.perf_counter()
    _check_out(parts_out, "--parts")
    idx, header, rg_arr = _setup(prefix, rg, reference, threads, argv)
    first, starts, reglist = read_regions(regions, idx.names, idx.lengths)
    ends = np.array([e for _, _, e in reglist], np.int64)
    ngroups = partfile.n_groups(len(reglist))
    mine = f"{parts_out}.rank{rank}.tmp{os.getpid()}" if size > 1 else f"{parts_out}.tmp{os.getpid()}"
    qcounts = list(qualcal.new_counts())
    aligner = Aligner(idx)
    stats = Stats()
    writer = bam.BamWriter(level)
    pw = None
    try:
        pw = PartWriter(writer, mine, header, ngroups)
        for b, batch in mpiwork.batches(_reader(r1, r2, batch_pairs, phred64), comm, rank, size):
            aln, model, data, sizes = aligner.align_encode(batch, rg_arr, qcounts if qual_counts else None)
            groups = group_of_reads(aln, first, starts, ends, flank)
            pw.add(*group_records(data, sizes, groups, ngroups))
            stats.add(aln, model, batch.paired)
            if progress:
                progress(stats)
        pw.close()
        writer.close()
        writer = None
        records = pw.records
        if size > 1:
            names = comm.gather(mine, root=0)
            allstats = comm.gather((stats, qcounts, records), root=0)
            if rank == 0:
                for s_, q_, r_ in allstats[1:]:
                    stats.merge(s_)
                    qcounts[0] += q_[0]
                    qcounts[1] += q_[1]
                    records = records + r_
                partfile.merge(parts_out, names, header)
        else:
            os.replace(mine, parts_out)
            for suffix in ("groups", "blocks"):
                os.replace(partfile.paths(mine)[suffix], partfile.paths(parts_out)[suffix])
        if rank == 0:
            if qual_counts:
                qualcal.write_counts(qual_counts, *qcounts)
            meta = partfile.write_manifest(parts_out, reglist, flank, records,
                                           {"reads": stats.c["reads"], "paired": r2 is not None})
        if size > 1:
            comm.Barrier()
    except BaseException as e:
        if writer is not None:
            writer.abort()
        partfile.remove(mine)
        _fail_ranks(e, comm, rank, size)
        raise
    if rank != 0:
        return None
    res = stats.summary()
    res.update(seconds=round(time.perf_counter() - t0, 3), ranks=size, threads=threads, paired=r2 is not None,
               parts=os.path.abspath(parts_out), regions=len(reglist),
               unmapped_pairs_records=meta["unmapped_pairs_records"])
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.align",
                                 description="Align short reads (paired-end, or single-end with one FASTQ) to a "
                                             "genefarm index; writes BAM.")
    ap.add_argument("prefix", help="index prefix (from python -m kernels.index)")
    ap.add_argument("r1", help="FASTQ of mate 1, or of the single-end reads (plain or gzip)")
    ap.add_argument("r2", nargs="?", help="FASTQ of mate 2 (paired-end)")
    out = ap.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", help="output BAM")
    out.add_argument("--parts", metavar="OUT.bam",
                     help="with --regions: write one part file, its records grouped by region (kernels.partfile)")
    ap.add_argument("--regions", metavar="BED", help="regions tiling the genome (chrom, start, end; 0-based)")
    ap.add_argument("--flank", type=int, default=partfile.FLANK, metavar="BASES",
                    help=f"with --parts: bases of each region's head and tail groups, which the calling of its "
                         f"neighbours reads (default {partfile.FLANK:,})")
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads per rank (default 1)")
    ap.add_argument("-R", "--read-group", help=r"read group header line, e.g. '@RG\tID:lane1\tSM:sample'")
    ap.add_argument("--reference", help="check that the index was built from this FASTA")
    ap.add_argument("--phred64", action="store_true",
                    help="the FASTQ qualities are Phred+64 (older Illumina): convert them (without it such "
                         "files are refused)")
    ap.add_argument("--batch", type=int, default=BATCH_PAIRS, help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, default=1, choices=range(0, 10), metavar="0-9",
                    help="BGZF compression level (default 1: fast; 6 is samtools' default)")
    ap.add_argument("--qual-counts", metavar="FILE",
                    help="write the base quality calibration counts here (for kernels.call --qual-counts)")
    ap.add_argument("--json", action="store_true", help="print the mapping summary as JSON on stdout")
    ap.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    a = ap.parse_args(argv)
    if not a.quiet:
        note_compile()
    if a.threads < 1:
        raise InputError(f"-t {a.threads}: need at least one thread")
    if a.flank < 0:
        raise InputError(f"--flank {a.flank}: must be >= 0")
    if bool(a.parts) != bool(a.regions):
        raise InputError("--parts and --regions go together (one part file, its records grouped by region)")
    res = run(a.prefix, a.r1, a.r2, a.output, a.threads, a.read_group, a.reference, a.batch, a.level,
              argv=["python -m kernels.align"] + (argv if argv is not None else sys.argv[1:]),
              regions=a.regions, parts_out=a.parts, qual_counts=a.qual_counts, phred64=a.phred64, flank=a.flank)
    if res is None:
        return 0
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    if not a.quiet:
        print(f"aligned {res['reads']:,} reads in {res['seconds']:.1f} s: mapped {100 * res['frac_mapped']:.2f}%"
              + (f", properly paired {100 * res['frac_proper']:.2f}%" if res["paired"] else " (single-end)")
              + f", MAPQ>=20 {100 * res['frac_mapq20']:.2f}%"
              + (f", insert {res['insert_mean']:.0f} +- {res['insert_std']:.0f}" if "insert_mean" in res else "")
              + f" -> {a.output or a.parts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.align")
