"""BAM headers the calling kernels read and write: the inputs checked against each other and the
reference, the sample and its libraries, and the header of sorted output. Shared by
kernels.call and kernels.markdup (neither imports the other).
"""
import os
import shlex
import sys

import numpy as np
import pysam

from kernels import __version__
from kernels.bam import header_bytes
from kernels.bamread import header_of
from kernels.errors import InputError

def libraries(hdr):
    """(read group IDs, library index of each): read groups with the same LB share a library; a
    read group without LB is a library of its own."""
    ids, libs, names = [], [], {}
    for g in hdr.get("RG", []):
        ids.append(g["ID"])
        lb = g.get("LB", "\0" + g["ID"])
        libs.append(names.setdefault(lb, len(names)))
    return ids, libs


def check_headers(paths):
    """The inputs' headers: they must share one reference dictionary. Returns a merged header
    (the first one's, with the read groups of all)."""
    hdrs = []
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"{p}: no such BAM file")
        if not os.access(p, os.R_OK):
            raise InputError(f"{p}: not readable (permissions)")
        hdrs.append((p, header_of(p)))
    first_p, first = hdrs[0]
    sq = [(s["SN"], s["LN"]) for s in first.get("SQ", [])]
    if not sq:
        raise InputError(f"{first_p}: the BAM header has no @SQ lines (no reference dictionary)")
    rgs = {g["ID"]: g for g in first.get("RG", [])}
    for p, h in hdrs[1:]:
        if [(s["SN"], s["LN"]) for s in h.get("SQ", [])] != sq:
            raise InputError(f"{p}: its @SQ lines differ from those of {first_p}; the inputs must come "
                             f"from alignments to one reference")
        for g in h.get("RG", []):
            rgs.setdefault(g["ID"], g)
    merged = dict(first)
    if rgs:
        merged["RG"] = list(rgs.values())
    return merged


def check_reference(hdr, ref, bam_path, ref_path):
    """InputError unless the BAM's @SQ names and lengths are the reference's."""
    mine = {n: int(ln) for n, ln in zip(ref.names, ref.lengths)}
    for s in hdr["SQ"]:
        if s["SN"] not in mine:
            raise InputError(f"{bam_path}: contig {s['SN']!r} of the BAM header is not in {ref_path}; "
                             f"the reads were aligned to another reference")
        if mine[s["SN"]] != int(s["LN"]):
            raise InputError(f"{bam_path}: contig {s['SN']!r} has length {s['LN']} in the BAM header but "
                             f"{mine[s['SN']]} in {ref_path}; the reads were aligned to another reference")
    if [s["SN"] for s in hdr["SQ"]] != list(ref.names):
        raise InputError(f"{bam_path}: the BAM's contigs are not those of {ref_path} in the same order "
                         f"(BAM: {', '.join(s['SN'] for s in hdr['SQ'][:4])}...; reference: "
                         f"{', '.join(ref.names[:4])}...)")


def check_sorted(path, hdr, reads):
    """A BAM whose header says SO:coordinate must be sorted (so callers may trust it)."""
    if hdr.get("HD", {}).get("SO") != "coordinate":
        return
    tkey = np.where(reads.tid < 0, np.iinfo(np.int64).max, reads.tid.astype(np.int64))
    bad = np.flatnonzero((tkey[1:] < tkey[:-1]) | ((tkey[1:] == tkey[:-1]) & (reads.pos[1:] < reads.pos[:-1])))
    if len(bad):
        i = int(bad[0]) + 1
        raise InputError(f"{path}: the header says SO:coordinate but record {i + 1} (position {reads.pos[i] + 1}) "
                         f"comes after position {reads.pos[i - 1] + 1}: unsorted input where sorted is required; "
                         f"sort it with `samtools sort` or drop the SO tag")


def sample_name(hdr, first_path):
    sms = sorted({g["SM"] for g in hdr.get("RG", []) if "SM" in g})
    if len(sms) > 1:
        raise InputError(f"the inputs hold reads of several samples ({', '.join(sms)}); call each sample on its own")
    if sms:
        return sms[0]
    return os.path.basename(first_path).split(".")[0] or "SAMPLE"


def sorted_header_bytes(hdr, argv):
    """BAM header for sorted output: SO:coordinate and a @PG line for this command."""
    h = dict(hdr)
    h["HD"] = dict(h.get("HD", {"VN": "1.6"}), SO="coordinate")
    h["HD"].pop("GO", None)
    cl = " ".join(shlex.quote(a) for a in (argv or sys.argv))
    pgs = list(h.get("PG", []))
    ids = {p["ID"] for p in pgs}
    pid = "genefarm-call"
    while pid in ids:
        pid += "+"
    pgs.append({"ID": pid, "PN": "genefarm-call", "VN": __version__, "CL": cl})
    h["PG"] = pgs
    text = str(pysam.AlignmentHeader.from_dict(h))
    return header_bytes(text, [s["SN"] for s in h["SQ"]], [s["LN"] for s in h["SQ"]])


