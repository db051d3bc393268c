"""Genomic regions: parsing 'CHR:START-END', and cutting a genome into N regions.

An Interval is 0-based and half-open internally; on the command line and in messages regions
are written as samtools writes them: CHR:START-END, 1-based, both ends included.
"""
import re
from dataclasses import dataclass

import numpy as np

from kernels.errors import InputError

_REGION = re.compile(r"^(?P<chrom>[^:\s]+)(?::(?P<start>[\d,]+)(?:-(?P<end>[\d,]+))?)?$")


@dataclass(frozen=True)
class Interval:
    chrom: str
    start: int      # 0-based, included
    end: int        # excluded

    def __str__(self):
        return f"{self.chrom}:{self.start + 1}-{self.end}"

    def __len__(self):
        return self.end - self.start


def parse_region(text, lengths):
    """'chr1:1001-2000' (1-based, inclusive), 'chr1:1001' (to the end) or 'chr1' -> Interval.
    lengths: {contig: length}."""
    m = _REGION.match(text.strip())
    if not m:
        raise InputError(f"--region {text!r}: not a region; write CHR, CHR:START or CHR:START-END "
                         f"(1-based, e.g. chr20:10000001-10500000)")
    chrom = m.group("chrom")
    if chrom not in lengths:
        some = ", ".join(list(lengths)[:5])
        raise InputError(f"--region {text!r}: contig {chrom!r} is not in the reference (it has {some}"
                         f"{', ...' if len(lengths) > 5 else ''})")
    n = lengths[chrom]
    start = int(m.group("start").replace(",", "")) if m.group("start") else 1
    end = int(m.group("end").replace(",", "")) if m.group("end") else n
    if start < 1 or end < start:
        raise InputError(f"--region {text!r}: START must be >= 1 and END >= START")
    if start > n or end > n:
        raise InputError(f"--region {text!r}: outside contig {chrom} (length {n:,})")
    return Interval(chrom, start - 1, end)


def split_genome(names, lengths, n):
    """The contigs cut into n regions of about equal length (a region is a list of Intervals: it may
    end one contig and start the next). Fewer than n when the genome has fewer bases."""
    total = sum(lengths)
    if not 1 <= n <= max(1, total):
        raise InputError(f"--regions {n}: must be between 1 and the genome length ({total:,})")
    cuts = [total * i // n for i in range(n + 1)]
    regions = []
    offset = 0
    spans = []
    for name, ln in zip(names, lengths):
        spans.append((name, offset, offset + ln))
        offset += ln
    for i in range(n):
        a, b = cuts[i], cuts[i + 1]
        if a == b:
            continue
        parts = [Interval(name, max(a, s) - s, min(b, e) - s) for name, s, e in spans if s < b and e > a]
        regions.append(parts)
    return regions


def read_regions(path, names, lengths):
    """A BED file (chrom, start, end; 0-based, half-open) whose regions tile every contig, in
    contig order -> (first_region per contig, starts, [(chrom, start, end)])."""
    try:
        with open(path) as f:
            lines = [(i + 1, ln.split("\t")) for i, ln in enumerate(f)
                     if ln.strip() and not ln.startswith(("#", "track", "browser"))]
    except OSError as e:
        raise InputError(f"--regions {path}: cannot read: {e.strerror}") from None
    tid_of = {n: t for t, n in enumerate(names)}
    regions = []
    for lineno, f in lines:
        if len(f) < 3:
            raise InputError(f"{path}: line {lineno}: expected chrom, start, end separated by tabs")
        chrom = f[0]
        try:
            start, end = int(f[1]), int(f[2])
        except ValueError:
            raise InputError(f"{path}: line {lineno}: start and end must be integers") from None
        if chrom not in tid_of:
            raise InputError(f"{path}: line {lineno}: contig {chrom!r} is not in the reference")
        if not 0 <= start < end <= lengths[tid_of[chrom]]:
            raise InputError(f"{path}: line {lineno}: {chrom}:{start}-{end} is not inside the contig "
                             f"(length {lengths[tid_of[chrom]]})")
        regions.append((lineno, tid_of[chrom], start, end))
    first = np.zeros(len(lengths) + 1, np.int64)
    starts = []
    i = 0
    for t in range(len(lengths)):
        pos = 0
        first[t] = len(starts)
        while i < len(regions) and regions[i][1] == t:
            lineno, _, start, end = regions[i]
            if start != pos:
                raise InputError(f"{path}: line {lineno}: regions must tile each contig in order without gaps "
                                 f"or overlaps: {names[t]} expected a region starting at {pos}, got {start}")
            starts.append(start)
            pos = end
            i += 1
        if pos != lengths[t]:
            raise InputError(f"{path}: the regions do not cover contig {names[t]} to its end ({lengths[t]}), "
                             f"or its regions are not in the reference's contig order")
    first[len(lengths)] = len(starts)
    if i != len(regions):
        raise InputError(f"{path}: line {regions[i][0]}: regions are not in the reference's contig order")
    return first, np.array(starts, np.int64), [(names[t], s, e) for _, t, s, e in regions]


def part_paths(prefix, nreg):
    """The part files of --parts: one per region, then the unmapped one."""
    width = max(4, len(str(nreg - 1)))
    return [f"{prefix}.r{g:0{width}d}.bam" for g in range(nreg)] + [f"{prefix}.unmapped.bam"]
