"""VCF output: the header, one normalised record per site, bgzip + tabix through pysam (htslib).

Records are minimal: REF and ALTs trimmed of a common suffix and then of a common prefix, one
base always kept (the anchor of an indel), so an indel left-aligned by the caller stays
left-aligned and a site is written one way whatever reads revealed it.
"""
import os

import pysam

from kernels import __version__
from kernels.dna import DECODE

FILTER_QUAL = 10.0


def header(contigs, sample, reference, command):
    """contigs: [(name, length)]."""
    lines = [
        "##fileformat=VCFv4.2",
        f"##source=genefarm-call {__version__}",
        f"##reference=file://{os.path.abspath(reference)}",
        f"##genefarm_callCommand={command}",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        f'##FILTER=<ID=LowQual,Description="QUAL below {FILTER_QUAL:g}">',
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Reads used at the site (duplicates and low mapping quality left out)">',
        '##INFO=<ID=HAP,Number=0,Type=Flag,Description="Genotyped by realigning the reads to the candidate haplotypes">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality (phred)">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Reads used at the site">',
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Reads supporting each allele">',
        '##FORMAT=<ID=PL,Number=G,Type=Integer,Description="Phred-scaled genotype likelihoods">',
    ]
    lines += [f"##contig=<ID={n},length={ln}>" for n, ln in contigs]
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", sample]))
    return "\n".join(lines) + "\n"


def trim(pos0, ref, alts):
    """Minimal representation of a site: pos0 (0-based) and code lists -> (pos0, ref, alts)."""
    ref = list(ref)
    alts = [list(a) for a in alts]
    while len(ref) > 1 and all(len(a) > 1 for a in alts) and all(a[-1] == ref[-1] for a in alts):
        ref.pop()
        for a in alts:
            a.pop()
    while len(ref) > 1 and all(len(a) > 1 for a in alts) and all(a[0] == ref[0] for a in alts):
        ref.pop(0)
        for a in alts:
            a.pop(0)
        pos0 += 1
    return pos0, ref, alts


def seq(codes):
    return DECODE[list(codes)].tobytes().decode() if len(codes) else ""


def record(chrom, pos0, ref, alts, qual, gt, gq, dp, ad, pl, hap):
    """One VCF line (without newline)."""
    filt = "PASS" if qual >= FILTER_QUAL else "LowQual"
    info = f"DP={dp}" + (";HAP" if hap else "")
    return (f"{chrom}\t{pos0 + 1}\t.\t{seq(ref)}\t{','.join(seq(a) for a in alts)}\t{qual:.2f}\t{filt}\t{info}\t"
            f"GT:GQ:DP:AD:PL\t{gt[0]}/{gt[1]}:{gq}:{dp}:{','.join(map(str, ad))}:{','.join(map(str, pl))}")


def write(path, text):
    """bgzip text into path and index it (.tbi); both under temporary names until complete."""
    tmp_txt = f"{path}.tmp{os.getpid()}.vcf"
    tmp = f"{path}.tmp{os.getpid()}.gz"
    try:
        with open(tmp_txt, "w") as f:
            f.write(text)
        pysam.tabix_compress(tmp_txt, tmp, force=True)
        pysam.tabix_index(tmp, preset="vcf", force=True)
        os.replace(tmp + ".tbi", path + ".tbi")
        os.replace(tmp, path)
    finally:
        for p in (tmp_txt, tmp, tmp + ".tbi"):
            if os.path.exists(p):
                os.unlink(p)
