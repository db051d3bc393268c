"""The aligner's per-batch code: a batch of reads -> candidates -> insert-size model -> placements
-> encoded BAM records. The drivers (one process, MPI ranks, whole BAM or part files) are in
kernels/align.py; this module knows nothing of files or ranks.
"""
import numpy as np

from kernels import bam, qualcal
from kernels.candidates import EXTRA_CAND, MAX_SPREAD, candidates_batch
from kernels.errors import InputError
from kernels.pair import insert_model
from kernels.place import pairs_batch, read_name_hashes, singles_batch
from kernels.scoring import BAND, MAX_CAND, params
from kernels.types import ALN, CAND, F_PROPER, F_UNMAP, cigar_stride

class Aligner:
    """Aligns batches of read pairs against a loaded index."""

    def __init__(self, idx, p=None):
        self.idx = idx
        self.p = params() if p is None else p
        self.refoff = idx.offsets
        # ALT and HLA contigs: their hits do not compete with the primary assembly's (place.prefer_primary)
        self.alt = np.array([1 if k in ("alt", "hla") else 0 for k in idx.kinds], np.uint8)

    def align(self, batch):
        """ReadBatch -> (aln records, cigar buffer, its stride per read, insert-size model)."""
        idx, p = self.idx, self.p
        nreads = batch.nreads
        lens = np.diff(batch.roff)
        maxlen = int(lens.max()) if nreads else 1
        bmax = MAX_SPREAD + 2 * int(p[BAND]) + 2
        cap = int(p[MAX_CAND]) + EXTRA_CAND
        cand = np.zeros((nreads, cap), CAND)
        ncand = np.zeros(nreads, np.int32)
        nloci = np.zeros(nreads, np.int32)
        rep = np.zeros(nreads, np.int32)
        candidates_batch(batch.seq, batch.roff, idx.seq, self.refoff, idx.mzb, idx.mzk, idx.mzo, idx.mzp,
                         idx.bucket_bits, idx.k, idx.w, p, maxlen, bmax, cand, ncand, nloci, rep)
        aln = np.zeros(nreads, ALN)
        cstride = cigar_stride(maxlen)
        cigs = np.zeros(nreads * cstride, np.uint32)
        if batch.paired:
            model = insert_model(cand, ncand, lens)
            pairs_batch(batch.seq, batch.roff, batch.names, batch.noff, idx.seq, self.refoff, self.alt, p, model,
                        bmax, maxlen, cand, ncand, rep, aln, cigs, cstride)
        else:
            model = np.zeros(5, np.float64)
            singles_batch(batch.seq, batch.roff, batch.names, batch.noff, idx.seq, self.refoff, self.alt, p, bmax,
                          maxlen, cand, ncand, rep, aln, cigs, cstride)
        return aln, cigs, cstride, model

    def align_encode(self, batch, rg_arr, qcounts=None):
        """align(), then the batch's BAM records: (aln, model, record bytes, record sizes); adds the
        batch's base quality counts to qcounts when given."""
        aln, cigs, cstride, model = self.align(batch)
        sizes = np.empty(len(aln), np.int64)
        data = bam.encode_batch(aln, batch.names, batch.noff, batch.seq, batch.qual, batch.roff, cigs, cstride,
                                batch.paired,
                                self.idx.seq, self.refoff, rg_arr, np.ones(len(aln), np.bool_), sizes)
        if qcounts is not None:
            count_qualities(qcounts, aln, batch, data, sizes, self.idx, self.refoff)
        return aln, model, data, sizes


class Stats:
    """Counts for the mapping summary (and the JSON the master reads)."""

    FIELDS = ("reads", "mapped", "proper", "mapq20", "pairs_both_mapped")

    def __init__(self):
        self.c = dict.fromkeys(self.FIELDS, 0)
        self.isize = []

    def add(self, aln, model, paired=True):
        f = aln["flag"]
        mapped = (f & F_UNMAP) == 0
        self.c["reads"] += len(aln)
        self.c["mapped"] += int(mapped.sum())
        self.c["proper"] += int(((f & F_PROPER) != 0).sum())
        self.c["mapq20"] += int((mapped & (aln["mapq"] >= 20)).sum())
        if paired:
            self.c["pairs_both_mapped"] += int((mapped[0::2] & mapped[1::2]).sum())
        if model[0] > 0:
            self.isize.append((float(model[1]), float(model[2])))

    def merge(self, other):
        for k in self.FIELDS:
            self.c[k] += other.c[k]
        self.isize += other.isize

    def summary(self):
        n = max(self.c["reads"], 1)
        d = dict(self.c)
        d.update(frac_mapped=round(self.c["mapped"] / n, 6), frac_proper=round(self.c["proper"] / n, 6),
                 frac_mapq20=round(self.c["mapq20"] / n, 6))
        if self.isize:
            d["insert_mean"] = round(float(np.mean([m for m, _ in self.isize])), 1)
            d["insert_std"] = round(float(np.mean([s for _, s in self.isize])), 1)
        return d


def count_qualities(counts, aln, batch, data, sizes, idx, refoff):
    """Add the batch's base quality counts (kernels.qualcal) over the records just encoded."""
    starts = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    sel = np.flatnonzero(qualcal.counted(aln["flag"], aln["mapq"], read_name_hashes(batch.names, batch.noff, batch.paired)))
    qualcal.count_errors(data, starts, sel, aln["pos"], aln["flag"], idx.seq, refoff, aln["tid"], *counts)


def parse_rg(rg):
    """-R '@RG\\tID:x\\tSM:y' -> (header line, ID)."""
    if not rg:
        return None, None
    line = rg.replace("\\t", "\t")
    fields = line.split("\t")
    if fields[0] != "@RG":
        raise InputError(f"-R {rg!r}: a read group line must start with '@RG' (e.g. '@RG\\tID:lane1\\tSM:sample')")
    ids = [f[3:] for f in fields[1:] if f.startswith("ID:")]
    if len(ids) != 1 or not ids[0]:
        raise InputError(f"-R {rg!r}: the read group needs exactly one non-empty ID:... field")
    return line, ids[0]


