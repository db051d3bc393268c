"""Grouping the aligner's records for its part files (the format: kernels/partfile.py): each
read's group from its position, the records of a batch reordered by group, and the writer that
sends them to BGZF in runs of one group.
"""
import numpy as np

from kernels._numba import jit

FLUSH_BYTES = 256 << 10  # a group's records are sent to BGZF once this many are waiting...
PENDING_BYTES = 64 << 20  # ...or the largest groups are, when all the waiting ones pass this


@jit
def group_of_reads(aln, first_region, starts, ends, flank):
    """Group of every read (see the module doc): its region's head, body or tail by its position,
    or the last group (3R) for a read without one. first_region[t]..first_region[t+1] are contig
    t's regions, starts/ends their bounds."""
    n = aln.shape[0]
    nreg = starts.shape[0]
    out = np.empty(n, np.int32)
    for r in range(n):
        t = aln[r].tid
        if t < 0:
            out[r] = 3 * nreg
            continue
        a = first_region[t]
        b = first_region[t + 1]
        g = a + np.searchsorted(starts[a:b], aln[r].pos, side="right") - 1
        p = aln[r].pos
        if p < starts[g] + flank:
            out[r] = 3 * g
        elif p >= ends[g] - flank:
            out[r] = 3 * g + 2
        else:
            out[r] = 3 * g + 1
    return out


@jit
def group_records(data, sizes, groups, ngroups):
    """Reorder encoded records by group (stable): returns (bytes, bounds, counts) with group g's
    records in bytes[bounds[g]:bounds[g+1]], counts[g] of them."""
    n = sizes.shape[0]
    offs = np.empty(n + 1, np.int64)
    offs[0] = 0
    for r in range(n):
        offs[r + 1] = offs[r] + sizes[r]
    bounds = np.zeros(ngroups + 1, np.int64)
    counts = np.zeros(ngroups, np.int64)
    for r in range(n):
        bounds[groups[r] + 1] += sizes[r]
        counts[groups[r]] += 1
    for g in range(ngroups):
        bounds[g + 1] += bounds[g]
    fill = bounds[:ngroups].copy()
    out = np.empty(offs[n], np.uint8)
    for r in range(n):
        g = groups[r]
        out[fill[g]:fill[g] + sizes[r]] = data[offs[r]:offs[r + 1]]
        fill[g] += sizes[r]
    return out, bounds, counts


def group_records_slow(data, sizes, groups, ngroups):
    offs = np.concatenate([[0], np.cumsum(sizes)])
    per = [[] for _ in range(ngroups)]
    for r, g in enumerate(groups):
        per[g].append(bytes(data[offs[r]:offs[r + 1]]))
    out = b"".join(b"".join(x) for x in per)
    bounds = np.concatenate([[0], np.cumsum([sum(len(y) for y in x) for x in per])])
    return np.frombuffer(out, np.uint8), bounds, np.array([len(x) for x in per])


class PartWriter:
    """Groups records as they come and sends them to a BamWriter's grouped file in runs of at
    least FLUSH_BYTES per group, holding at most about PENDING_BYTES meanwhile."""

    def __init__(self, writer, path, header, ngroups):
        self.w, self.path, self.ngroups = writer, path, ngroups
        writer.open_grouped(path, header, ngroups)
        self.pending = [[] for _ in range(ngroups)]
        self.psize = np.zeros(ngroups, np.int64)
        self.pcount = np.zeros(ngroups, np.int64)
        self.total = 0
        self.records = np.zeros(ngroups, np.int64)

    def add(self, grouped, bounds, counts):
        for g in np.flatnonzero(counts):
            self.pending[g].append(grouped[bounds[g]:bounds[g + 1]])
            self.psize[g] += bounds[g + 1] - bounds[g]
            self.pcount[g] += counts[g]
            self.total += bounds[g + 1] - bounds[g]
            if self.psize[g] >= FLUSH_BYTES:
                self._flush(g)
        self.records += counts
        while self.total > PENDING_BYTES:
            self._flush(int(np.argmax(self.psize)))

    def _flush(self, g):
        if not self.pending[g]:
            return
        data = self.pending[g][0] if len(self.pending[g]) == 1 else np.concatenate(self.pending[g])
        self.w.write_group(g, int(self.pcount[g]), data)
        self.total -= int(self.psize[g])
        self.pending[g] = []
        self.psize[g] = 0
        self.pcount[g] = 0

    def close(self):
        """Send what is left, in group order, and close the file (the writer writes the tables)."""
        for g in range(self.ngroups):
            self._flush(g)
        self.w.close_file()


FLUSH_BYTES = 256 << 10  # a group's records are sent to BGZF once this many are waiting...
PENDING_BYTES = 64 << 20  # ...or the largest groups are, when all the waiting ones pass this


