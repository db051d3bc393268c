"""The gather stage: region VCFs -> one VCF (bgzip + tabix), region BAMs -> one BAM (+ index), a QC summary.

    python -m worker.gather -o OUTDIR --name SAMPLE --vcf r0000.vcf.gz r0001.vcf.gz ... --bam ... \
                            [--unmapped-from PART.bam ...] [--json]       (any list may be @FILE, one per line)

Regions come in genome order and a variant belongs to the region holding its POS, so the
whole-genome VCF is the region VCFs' records one after the other (read and written with pysam,
htslib underneath; no bcftools). The region BAMs, sorted and in genome order, are concatenated
(samtools cat: BGZF blocks copied, nothing recompressed; the header is the first BAM's) and
indexed; should indexing find them out of order, they are merged instead (samtools merge). The
pairs with no position are taken from the aligner's part files (--unmapped-from: their last
group's BGZF runs, copied as they are) and go at the BAM's end. Writes
OUTDIR/SAMPLE.vcf.gz(.tbi), OUTDIR/SAMPLE.bam(.bai), OUTDIR/SAMPLE.qc.json, each under a
temporary name first. Exit 2 when an input is missing or not what it should be.
"""
import argparse
import json
import os
import sys
import time

import pysam


class GatherError(Exception):
    pass


def concat_vcfs(vcfs, out):
    """Concatenate VCFs (same header, records in order) into bgzipped out + .tbi; returns counts."""
    tmp = out + ".tmp.vcf.gz"
    counts = {"variants": 0, "snps": 0, "indels": 0, "other": 0}
    last = None
    with pysam.VariantFile(vcfs[0]) as first:
        header = first.header.copy()
    with pysam.VariantFile(tmp, "wz", header=header) as w:
        for v in vcfs:
            with pysam.VariantFile(v) as f:
                if list(f.header.contigs) != list(header.contigs) or list(f.header.samples) != list(header.samples):
                    raise GatherError(f"{v}: its header does not match {vcfs[0]} (contigs or samples differ)")
                for rec in f:
                    key = (header.contigs[rec.contig].id if rec.contig in header.contigs else -1, rec.pos)
                    if last is not None and key < last:
                        raise GatherError(f"{v}: record {rec.contig}:{rec.pos} is before the previous region's "
                                          f"last record: region VCFs must be given in genome order")
                    last = key
                    w.write(rec)
                    counts["variants"] += 1
                    alts = rec.alts or ()
                    if all(len(a) == 1 and len(rec.ref) == 1 for a in alts):
                        counts["snps"] += 1
                    elif all(not a.startswith("<") for a in alts):
                        counts["indels"] += 1
                    else:
                        counts["other"] += 1
    pysam.tabix_index(tmp, preset="vcf", force=True)
    os.replace(tmp + ".tbi", out + ".tbi.tmp")
    os.replace(tmp, out)
    os.replace(out + ".tbi.tmp", out + ".tbi")
    return counts


def merge_bams(bams, out, threads=1):
    """Returns how: "cat" (the regions' BAMs one after the other) or "merge"."""
    tmp = out + ".tmp.bam"
    how = "cat"
    if len(bams) == 1:
        import shutil
        shutil.copyfile(bams[0], tmp)
    else:
        pysam.cat("-o", tmp, *bams)
    try:
        pysam.index("-@", str(threads), tmp)          # htslib refuses to index an unsorted BAM
    except pysam.utils.SamtoolsError:
        how = "merge"
        for p in (tmp, tmp + ".bai"):
            if os.path.exists(p):
                os.unlink(p)
        pysam.merge("-f", "-c", "-p", "-@", str(threads), tmp, *bams)
        pysam.index("-@", str(threads), tmp)
    os.replace(tmp + ".bai", out + ".bai.tmp")
    os.replace(tmp, out)
    os.replace(out + ".bai.tmp", out + ".bai")
    return how


def bam_counts(bam, threads=1):
    """reads, mapped, duplicates, properly paired (primary records), from samtools flagstat (via pysam)."""
    st = json.loads(pysam.flagstat("-@", str(threads), "-O", "json", bam))
    p, f = st["QC-passed reads"], st["QC-failed reads"]
    c = {"reads": p["primary"] + f["primary"], "mapped": p["primary mapped"] + f["primary mapped"],
         "duplicates": p["primary duplicates"] + f["primary duplicates"],
         "proper": p["properly paired"] + f["properly paired"]}
    n = max(c["reads"], 1)
    c["mapping_rate"] = round(c["mapped"] / n, 6)
    c["duplicate_rate"] = round(c["duplicates"] / n, 6)
    return c


def unmapped_bam(parts, out):
    """A BAM of the pairs with no position in the part files (kernels.partfile), or None if none."""
    from kernels.partfile import PartFile, copy_group
    pfs = [PartFile(p) for p in parts]
    if not any(p.meta["unmapped_pairs_records"] for p in pfs):
        return None
    copy_group(pfs, pfs[0].meta["groups"] - 1, out)
    return out


def run(out_dir, name, vcfs, bams, threads=1, unmapped_from=()):
    for p in vcfs + bams + list(unmapped_from):
        if not os.path.exists(p):
            raise GatherError(f"{p}: missing input of the gather stage (a region task's output is gone)")
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    vcf = os.path.join(out_dir, f"{name}.vcf.gz")
    bam = os.path.join(out_dir, f"{name}.bam")
    try:
        vc = concat_vcfs(vcfs, vcf)
        extra = unmapped_bam(unmapped_from, os.path.join(out_dir, "unmapped.tmp.bam")) if unmapped_from else None
        how = merge_bams(bams + ([extra] if extra else []), bam, threads)
        if extra:
            os.unlink(extra)
    except BaseException:
        for p in os.listdir(out_dir):          # no temporary file is left behind
            if ".tmp" in p:
                os.unlink(os.path.join(out_dir, p))
        raise
    qc = {"sample": name, "vcf": vcf, "bam": bam, "regions": len(vcfs), "bam_joined_by": how,
          **bam_counts(bam, threads), **vc,
          "seconds": round(time.perf_counter() - t0, 3)}
    tmp = os.path.join(out_dir, f"{name}.qc.json.tmp")
    with open(tmp, "w") as f:
        json.dump(qc, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, f"{name}.qc.json"))
    return qc


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m worker.gather", description=__doc__.split("\n")[0],
                                 fromfile_prefix_chars="@")
    ap.add_argument("-o", "--outdir", required=True)
    ap.add_argument("--name", default="sample")
    ap.add_argument("--vcf", action="extend", nargs="+", default=[], required=True)
    ap.add_argument("--bam", action="extend", nargs="+", default=[], required=True)
    ap.add_argument("--unmapped-from", action="extend", nargs="+", default=[], metavar="PART",
                    help="part files whose pairs with no position go at the BAM's end")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        qc = run(a.outdir, a.name, a.vcf, a.bam, a.threads, a.unmapped_from)
    except (GatherError, ValueError, OSError) as e:
        print(f"worker.gather: error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(qc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
