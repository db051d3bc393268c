"""Genomic regions: parsing 'CHR:START-END', and cutting a genome into N regions.

An Interval is 0-based and half-open internally; on the command line and in messages regions
are written as samtools writes them: CHR:START-END, 1-based, both ends included. Contig names
may hold ':' and '*' (GRCh38's HLA-A*01:01:01:01): as in htslib, a region is the whole string
when that is a contig, else the contig before its last ':' and the range after; '{NAME}:S-E'
says it without doubt, and it is how a region is written when its contig's name holds ':'.
"""
import re
from dataclasses import dataclass

import numpy as np

from kernels.errors import InputError

_RANGE = re.compile(r"^(?P<start>\d[\d,]*)(?:-(?P<end>\d[\d,]*)?)?$")


def region_text(chrom, start, end):
    """CHR:START-END (1-based, inclusive) for a 0-based half-open interval; {CHR} when CHR holds ':'."""
    c = f"{{{chrom}}}" if ":" in chrom else chrom
    return f"{c}:{start + 1}-{end}"


@dataclass(frozen=True)
class Interval:
    chrom: str
    start: int      # 0-based, included
    end: int        # excluded

    def __str__(self):
        return region_text(self.chrom, self.start, self.end)

    def __len__(self):
        return self.end - self.start


def parse_region(text, lengths):
    """'chr1:1001-2000' (1-based, inclusive), 'chr1:1001' or 'chr1:1001-' (to the end), 'chr1',
    or '{NAME}:...' for a name holding ':' -> Interval. lengths: {contig: length}."""
    t = text.strip()
    how = ("write CHR, CHR:START or CHR:START-END (1-based, e.g. chr20:10000001-10500000), and {NAME}:START-END "
           "for a contig whose name holds ':'")
    rng = None
    if t.startswith("{"):
        close = t.find("}")
        if close < 0 or (close + 1 < len(t) and t[close + 1] != ":"):
            raise InputError(f"--region {text!r}: not a region; {how}")
        chrom, rng = t[1:close], (t[close + 2:] if close + 1 < len(t) else None)
    else:
        i = t.rfind(":")
        split = (t[:i], t[i + 1:]) if i > 0 and _RANGE.match(t[i + 1:]) and t[:i] in lengths else None
        if t in lengths and split:
            raise InputError(f"--region {text!r}: ambiguous: {t!r} is a contig and so is {split[0]!r}; write "
                             f"{{{t}}} for the whole contig or {{{split[0]}}}:{split[1]} for the range")
        if t in lengths:
            chrom = t
        elif split:
            chrom, rng = split
        else:
            if i > 0 and t[:i] in lengths:
                raise InputError(f"--region {text!r}: not a region: {t[i + 1:]!r} is not START or START-END; {how}")
            chrom = t[:i] if i > 0 and _RANGE.match(t[i + 1:]) else t
            some = ", ".join(list(lengths)[:5])
            if not chrom or any(ch.isspace() for ch in chrom):
                raise InputError(f"--region {text!r}: not a region; {how}")
            raise InputError(f"--region {text!r}: contig {chrom!r} is not in the reference (it has {some}"
                             f"{', ...' if len(lengths) > 5 else ''})")
    if chrom not in lengths:
        some = ", ".join(list(lengths)[:5])
        raise InputError(f"--region {text!r}: contig {chrom!r} is not in the reference (it has {some}"
                         f"{', ...' if len(lengths) > 5 else ''})")
    n = lengths[chrom]
    start, end = 1, n
    if rng:
        m = _RANGE.match(rng)
        if not m:
            raise InputError(f"--region {text!r}: not a region; {how}")
        start = int(m.group("start").replace(",", ""))
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
