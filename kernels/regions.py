"""Genomic regions: parsing 'CHR:START-END', and cutting a genome into N regions.

An Interval is 0-based and half-open internally; on the command line and in messages regions
are written as samtools writes them: CHR:START-END, 1-based, both ends included.
"""
import re
from dataclasses import dataclass

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
