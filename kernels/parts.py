"""Part files: the aligner's records grouped by the region each read starts in (--parts).
"""
import numpy as np

from kernels._numba import jit

@jit
def region_of_reads(aln, first_region, starts):
    """Region index of every read (the region holding its position; a read without position:
    -1). first_region[t]..first_region[t+1] are contig t's regions, starts their start positions."""
    n = aln.shape[0]
    out = np.empty(n, np.int32)
    for r in range(n):
        t = aln[r].tid
        if t < 0:
            out[r] = -1
            continue
        a = first_region[t]
        b = first_region[t + 1]
        out[r] = a + np.searchsorted(starts[a:b], aln[r].pos, side="right") - 1
    return out


@jit
def group_records(data, sizes, regions, nreg):
    """Reorder encoded records by region (stable): returns (bytes, bounds) with region g's records
    in bytes[bounds[g]:bounds[g+1]]; the reads without position (-1) come last, as group nreg."""
    n = sizes.shape[0]
    offs = np.empty(n + 1, np.int64)
    offs[0] = 0
    for r in range(n):
        offs[r + 1] = offs[r] + sizes[r]
    bounds = np.zeros(nreg + 2, np.int64)
    for r in range(n):
        g = regions[r] if regions[r] >= 0 else nreg
        bounds[g + 1] += sizes[r]
    for g in range(nreg + 1):
        bounds[g + 1] += bounds[g]
    fill = bounds[:nreg + 1].copy()
    out = np.empty(offs[n], np.uint8)
    for r in range(n):
        g = regions[r] if regions[r] >= 0 else nreg
        out[fill[g]:fill[g] + sizes[r]] = data[offs[r]:offs[r + 1]]
        fill[g] += sizes[r]
    return out, bounds


