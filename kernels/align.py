"""Short-read paired-end alignment: seeds -> loci -> extension -> pairing -> BAM.

    python -m kernels.align PREFIX R1.fq[.gz] R2.fq[.gz] -o OUT.bam [-t THREADS] [-R '@RG\\tID:x\\tSM:y']
    python -m kernels.align PREFIX R1 R2 --regions REGIONS.bed --parts OUT   (OUT.rNNNN.bam per region)
    mpiexec -n K python -m kernels.align ...      (ranks split the batches; same records as 1 rank)

Reads go in batches of pairs (fixed size, so the output does not depend on ranks or threads):
1. candidates (threads over reads): minimizer hits (seed.py), loci (chain.py), each of the best
   loci aligned (extend.py: ungapped fast path, banded affine-gap alignment when the seeds or the
   mismatches say there is an indel), duplicates of one locus merged;
2. the batch's insert-size model (pair.py);
3. pairs (threads over pairs): mate rescue, the best pair or the best single placements, MAPQ,
   CIGAR, flags and mate fields;
4. records encoded (bam.py) and handed to the BGZF writer thread while the next batch aligns.
The BAM is written under a temporary name and renamed when complete. With K ranks, each batch
goes to the rank that asks for it first, which writes it as one part file, and rank 0 joins them in batch
order (samtools cat, through pysam). Rank 0 reads the input once and hands batches to whichever
rank asks (kernels.mpiwork).
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
from kernels import bam, index as gindex, mpiwork, qualcal
from kernels._numba import note_compile, set_threads
from kernels.aligner import Aligner, Stats, parse_rg
from kernels.errors import InputError, run_cli
from kernels.fastq import PairedReader
from kernels.parts import group_records, region_of_reads
from kernels.regions import part_paths, read_regions

BATCH_PAIRS = 10000
def run(prefix, r1, r2, out, threads=1, rg=None, reference=None, batch_pairs=BATCH_PAIRS, level=1,
        argv=None, progress=None, regions=None, parts_prefix=None, qual_counts=None):
    """Align R1/R2 with the index at prefix into out (BAM), or with regions (a BED tiling the
    genome) into one part file per region under parts_prefix. Returns the summary dict (rank 0)."""
    if regions:
        return run_parts(prefix, r1, r2, regions, parts_prefix, threads, rg, reference, batch_pairs, level,
                         argv, progress, qual_counts)
    comm, rank, size = mpiwork.world()
    t0 = time.perf_counter()
    idx, header, rg_arr = _setup(prefix, rg, reference, threads, argv)
    if os.path.isdir(out):
        raise InputError(f"-o {out}: is a directory; give the BAM file's path")
    outdir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(outdir):
        raise InputError(f"-o {out}: directory {outdir} does not exist")
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
        for b, batch in mpiwork.batches(lambda: PairedReader(r1, r2, batch_pairs, guided=True), comm, rank, size):
            aln, model, data, sizes = aligner.align_encode(batch, rg_arr, counts if qual_counts else None)
            if size > 1:
                writer.open(os.path.join(parts, f"part-{b:07d}.bgzf"), b"")   # records only
                writer.write(data)
                writer.close_file()
            else:
                writer.write(data)
            stats.add(aln, model)
            if progress:
                progress(stats)
        writer.close()
        writer = None
        if size == 1:
            os.replace(tmp, out)
            if qual_counts:
                qualcal.write_counts(qual_counts, *counts)
        else:
            allstats = comm.gather((stats, counts), root=0)
            if rank == 0:
                for s, c in allstats[1:]:
                    stats.merge(s)
                    counts[0] += c[0]
                    counts[1] += c[1]
                if qual_counts:
                    qualcal.write_counts(qual_counts, *counts)
                files = sorted(os.listdir(parts))
                bam.concat_records(tmp, header, [os.path.join(parts, f) for f in files], level)
                os.replace(tmp, out)
                shutil.rmtree(parts, ignore_errors=True)
            comm.Barrier()
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if os.path.exists(tmp):
            os.unlink(tmp)
        if parts and (rank == 0 or not isinstance(e, InputError)):
            shutil.rmtree(parts, ignore_errors=True)
        if size > 1 and not isinstance(e, InputError):
            # bad input stops every rank at the same record; anything else happened on this rank
            # only, and the others would wait for it forever
            import traceback
            traceback.print_exc()
            print(f"kernels.align: rank {rank} failed; aborting all {size} ranks", file=sys.stderr)
            comm.Abort(1)
        raise
    res = stats.summary()
    res["seconds"] = round(time.perf_counter() - t0, 3)
    res["ranks"] = size
    res["threads"] = threads
    res["bam"] = os.path.abspath(out)
    return res if rank == 0 else None


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


def run_parts(prefix, r1, r2, regions, parts_prefix, threads=1, rg=None, reference=None,
              batch_pairs=BATCH_PAIRS, level=1, argv=None, progress=None, qual_counts=None):
    """--regions/--parts: every read goes into the part file of the region holding its position
    (a read placed at its unmapped mate's position too); pairs with no position go to the
    unmapped part. Every part exists at the end, possibly empty. With K ranks a part holds the
    same records as with one rank, grouped by rank."""
    comm, rank, size = mpiwork.world()
    t0 = time.perf_counter()
    idx, header, rg_arr = _setup(prefix, rg, reference, threads, argv)
    first, starts, reglist = read_regions(regions, idx.names, idx.lengths)
    nreg = len(reglist)
    pdir = os.path.dirname(os.path.abspath(parts_prefix))
    if not os.path.isdir(pdir):
        raise InputError(f"--parts {parts_prefix}: directory {pdir} does not exist")
    finals = part_paths(parts_prefix, nreg)
    mine = [f"{p}.rank{rank}.tmp" for p in finals]
    counts = np.zeros(nreg + 1, np.int64)
    qcounts = list(qualcal.new_counts())
    aligner = Aligner(idx)
    stats = Stats()
    writer = bam.BamWriter(level)
    try:
        for p in mine:
            writer.open(p, header)
        for b, batch in mpiwork.batches(lambda: PairedReader(r1, r2, batch_pairs, guided=True), comm, rank, size):
            aln, model, data, sizes = aligner.align_encode(batch, rg_arr, qcounts if qual_counts else None)
            regs = region_of_reads(aln, first, starts)
            grouped, bounds = group_records(data, sizes, regs, nreg)
            counts += np.bincount(np.where(regs < 0, nreg, regs), minlength=nreg + 1)
            for g in np.flatnonzero(np.diff(bounds)):
                writer.select(mine[g])
                writer.write(grouped[bounds[g]:bounds[g + 1]])
            stats.add(aln, model)
            if progress:
                progress(stats)
        writer.close()
        writer = None
        if size > 1:
            allstats = comm.gather((stats, counts, qcounts), root=0)
            if rank == 0:
                import pysam
                for s_, c_, q_ in allstats[1:]:
                    stats.merge(s_)
                    counts += c_
                    qcounts[0] += q_[0]
                    qcounts[1] += q_[1]
                if qual_counts:
                    qualcal.write_counts(qual_counts, *qcounts)
                # the ranks' files of a region, concatenated in rank order (samtools cat)
                for final in finals:
                    files = [f"{final}.rank{k}.tmp" for k in range(size)]
                    tmp = f"{final}.tmp{os.getpid()}"
                    pysam.cat("-o", tmp, *files)
                    os.replace(tmp, final)
                    for f in files:
                        os.unlink(f)
            comm.Barrier()
        else:
            for p, final in zip(mine, finals):
                os.replace(p, final)
            if qual_counts:
                qualcal.write_counts(qual_counts, *qcounts)
    except BaseException as e:
        if writer is not None:
            writer.abort()
        for p in mine:
            if os.path.exists(p):
                os.unlink(p)
        if size > 1 and not isinstance(e, InputError):
            import traceback
            traceback.print_exc()
            print(f"kernels.align: rank {rank} failed; aborting all {size} ranks", file=sys.stderr)
            comm.Abort(1)
        raise
    if rank != 0:
        return None
    res = stats.summary()
    res.update(seconds=round(time.perf_counter() - t0, 3), ranks=size, threads=threads,
               parts=[{"region": f"{c}:{s_ + 1}-{e}", "bam": os.path.abspath(p), "reads": int(n)}
                      for (c, s_, e), p, n in zip(reglist, finals, counts)],
               unmapped={"bam": os.path.abspath(finals[-1]), "reads": int(counts[nreg])})
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.align",
                                 description="Align paired-end short reads to a genefarm index; writes BAM.")
    ap.add_argument("prefix", help="index prefix (from python -m kernels.index)")
    ap.add_argument("r1", help="mate 1 FASTQ (plain or gzip)")
    ap.add_argument("r2", help="mate 2 FASTQ (plain or gzip)")
    out = ap.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", help="output BAM")
    out.add_argument("--parts", metavar="PREFIX",
                     help="with --regions: write PREFIX.rNNNN.bam per region and PREFIX.unmapped.bam")
    ap.add_argument("--regions", metavar="BED", help="regions tiling the genome (chrom, start, end; 0-based)")
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads per rank (default 1)")
    ap.add_argument("-R", "--read-group", help=r"read group header line, e.g. '@RG\tID:lane1\tSM:sample'")
    ap.add_argument("--reference", help="check that the index was built from this FASTA")
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
    if bool(a.parts) != bool(a.regions):
        raise InputError("--parts and --regions go together (one part file per region)")
    res = run(a.prefix, a.r1, a.r2, a.output, a.threads, a.read_group, a.reference, a.batch, a.level,
              argv=["python -m kernels.align"] + (argv if argv is not None else sys.argv[1:]),
              regions=a.regions, parts_prefix=a.parts, qual_counts=a.qual_counts)
    if res is None:
        return 0
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    if not a.quiet:
        print(f"aligned {res['reads']:,} reads in {res['seconds']:.1f} s: mapped {100 * res['frac_mapped']:.2f}%, "
              f"properly paired {100 * res['frac_proper']:.2f}%, MAPQ>=20 {100 * res['frac_mapq20']:.2f}%"
              + (f", insert {res['insert_mean']:.0f} +- {res['insert_std']:.0f}" if "insert_mean" in res else "")
              + f" -> {a.output or a.parts + '.*.bam'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.align")
