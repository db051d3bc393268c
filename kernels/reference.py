"""The reference as the calling kernels read it: only where it is needed.

`open_reference(path)` takes
* a genefarm index (its prefix, or the directory holding `ref.gfi.*`): the base codes are its
  memory-mapped `seq.npy`, already decoded; a region's pages are read when touched and shared
  through the page cache;
* a FASTA with a .fai (bgzip-compressed or plain; samtools faidx makes the index, and so does
  this when the directory is writable): the spans asked for are fetched (htslib's faidx, through
  pysam) and decoded into a lazily allocated array: pages never written take no memory;
* a plain-gzip FASTA, which cannot be read from the middle: read whole, with a note saying to
  bgzip it.
Either way `seq` is indexed in global coordinates (`offsets[tid] + position`), as the kernels
expect, and `load(tid, a, b)` makes [a, b) of a contig valid before a kernel reads it.
"""
import json
import os
import sys
import threading

import numpy as np

from kernels.dna import ENCODE
from kernels.errors import InputError


class RefView:
    """names, lengths, offsets, seq (uint8 codes, global coordinates); load() before reading."""

    def __init__(self, path, names, lengths, seq, fetcher=None, how="", kinds=None):
        from kernels.index import kind_of
        self.path = path
        self.names = list(names)
        # primary / alt / decoy / hla: the index's record, else GRCh38's naming (kernels.index.kind_of)
        self.kinds = list(kinds) if kinds is not None else [kind_of(n) for n in self.names]
        self.lengths = np.asarray(lengths, np.int64)
        self.offsets = np.zeros(len(self.names) + 1, np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        self.seq = seq
        self.how = how
        self._fetch = fetcher
        self._have = {}            # tid -> sorted disjoint [a, b) spans already decoded
        self._lock = threading.Lock()
        self.loaded_bases = 0

    @property
    def total(self):
        return int(self.offsets[-1])

    def load(self, tid, a, b):
        """Make bases [a, b) of contig tid valid in seq (clipped to the contig)."""
        if self._fetch is None:
            return
        a, b = max(0, int(a)), min(int(self.lengths[tid]), int(b))
        if a >= b:
            return
        with self._lock:
            spans = self._have.setdefault(tid, [])
            todo = _missing(spans, a, b)
            for s, e in todo:
                codes = self._fetch(self.names[tid], s, e)
                if len(codes) != e - s:
                    raise InputError(f"{self.path}: contig {self.names[tid]} gave {len(codes)} bases for "
                                     f"{s + 1}-{e}; is the .fai stale? rebuild it with `samtools faidx`")
                self.seq[self.offsets[tid] + s:self.offsets[tid] + e] = codes
                self.loaded_bases += e - s
            if todo:
                self._have[tid] = _merge(spans + todo)


def _missing(spans, a, b):
    """Parts of [a, b) not covered by the sorted disjoint spans."""
    out, at = [], a
    for s, e in spans:
        if e <= at:
            continue
        if s >= b:
            break
        if s > at:
            out.append((at, min(s, b)))
        at = max(at, e)
        if at >= b:
            break
    if at < b:
        out.append((at, b))
    return out


def _merge(spans):
    out = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def index_prefix_of(path):
    """The index prefix a path names (PREFIX or a directory with ref.gfi.json), or None."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "ref.gfi.json")):
        return os.path.join(path, "ref")
    if os.path.exists(path + ".gfi.json"):
        return path
    return None


def open_reference(path):
    """A RefView of an index or a FASTA (see the module doc)."""
    prefix = index_prefix_of(path)
    if prefix:
        from kernels import index as gindex
        ix = gindex.load(prefix)
        return RefView(path, ix.names, ix.lengths, ix.seq, how="index", kinds=ix.kinds)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such reference (a FASTA, or a genefarm index prefix)")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory without a genefarm index (ref.gfi.json) in it")
    import pysam
    try:
        fa = pysam.FastaFile(path)
    except (OSError, ValueError) as e:
        return _whole(path, e)
    names, lengths = list(fa.references), list(fa.lengths)
    total = int(sum(lengths))
    # np.zeros maps fresh zero pages: only the spans written below take memory
    seq = np.zeros(total, np.uint8)

    def fetch(name, a, b):
        text = fa.fetch(name, a, b).encode()
        codes = ENCODE[np.frombuffer(text, np.uint8)]
        if len(codes) and codes.max() == 255:
            bad = chr(text[int(np.argmax(codes == 255))])
            raise InputError(f"{path}: character {bad!r} in {name}:{a + 1}-{b} is not a nucleotide")
        return codes
    return RefView(path, names, lengths, seq, fetch, how="faidx")


def _whole(path, why):
    from kernels.fasta import read_fasta
    print(f"kernels: {path} cannot be read from the middle ({why}); reading it whole. Compress it with "
          f"bgzip (and `samtools faidx` it), or give the genefarm index, to read only the regions called",
          file=sys.stderr)
    ref = read_fasta(path)
    return RefView(path, ref.names, ref.lengths, ref.seq, how="whole")


def contigs_of(path):
    """[(name, length)] of an index or a FASTA, without reading its bases when it can."""
    prefix = index_prefix_of(path)
    if prefix:
        with open(prefix + ".gfi.json") as f:
            return [(c["name"], int(c["length"])) for c in json.load(f)["contigs"]]
    r = open_reference(path)
    return list(zip(r.names, (int(x) for x in r.lengths)))
