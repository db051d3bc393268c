"""Split a FASTQ pair into chunks of read pairs (the unit of alignment work).

    python -m kernels.split R1.fq[.gz] R2.fq[.gz] --pairs N -o PREFIX [--json]

writes PREFIX.cNNNN_R1.fastq.gz and PREFIX.cNNNN_R2.fastq.gz, N pairs each (the last chunk
fewer). The pair is checked on the way (same read count, same names, well-formed records) with
the aligner's reader, so a bad pair is found before any alignment starts. Chunks are written
under temporary names and renamed only after the whole input was read: a bad record anywhere
leaves no chunk behind. Read names lose a trailing /1 /2 and their comment; bases are written
upper case, IUPAC codes as N (what the aligner reads anyway).
"""
import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
from isal import igzip

from kernels._numba import jit
from kernels.dna import DECODE
from kernels.errors import InputError, run_cli
from kernels.fastq import PairedReader


@jit
def fastq_text(names, noff, seq, qual, roff, mate, decode):
    """FASTQ text of one mate of every pair of a batch."""
    n = noff.shape[0] - 1
    size = 0
    for i in range(n):
        r = 2 * i + mate
        L = roff[r + 1] - roff[r]
        size += (noff[i + 1] - noff[i]) + 2 * L + 6
    out = np.empty(size, np.uint8)
    p = 0
    for i in range(n):
        r = 2 * i + mate
        s = roff[r]
        L = roff[r + 1] - s
        out[p] = 64  # @
        p += 1
        for t in range(noff[i], noff[i + 1]):
            out[p] = names[t]
            p += 1
        out[p] = 10
        p += 1
        for t in range(L):
            out[p + t] = decode[seq[s + t]]
        p += L
        out[p] = 10
        out[p + 1] = 43  # +
        out[p + 2] = 10
        p += 3
        for t in range(L):
            out[p + t] = qual[s + t] + 33
        p += L
        out[p] = 10
        p += 1
    return out


@dataclass
class Chunk:
    """One chunk kernels.split wrote: its number, its two files, the index of its first pair in
    the input (0-based), and its pairs."""
    index: int
    r1: str
    r2: str
    first_pair: int
    pairs: int


@dataclass
class SplitSummary:
    """What kernels.split prints with --json (and the master reads back): the pairs, the chunks,
    the seconds it took."""
    pairs: int
    chunks: list
    seconds: float = 0.0

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(int(d.get("pairs", 0)), [Chunk(**c) for c in d.get("chunks", [])], float(d.get("seconds", 0.0)))


def chunk_paths(prefix, i):
    return f"{prefix}.c{i:04d}_R1.fastq.gz", f"{prefix}.c{i:04d}_R2.fastq.gz"


def split(r1, r2, pairs, prefix, level=1):
    """Write the chunks; returns the summary (chunks with their first pair and size)."""
    if pairs < 1:
        raise InputError(f"--pairs {pairs}: a chunk needs at least one pair")
    d = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(d):
        raise InputError(f"-o {prefix}: directory {d} does not exist")
    t0 = time.perf_counter()
    chunks, written = [], []
    try:
        with PairedReader(r1, r2, batch=pairs) as reader:
            for i, batch in enumerate(reader):
                finals = chunk_paths(prefix, i)
                for mate, final in enumerate(finals):
                    tmp = f"{final}.tmp{os.getpid()}"
                    written.append((tmp, final))
                    with igzip.open(tmp, "wb", compresslevel=level) as f:
                        f.write(fastq_text(batch.names, batch.noff, batch.seq, batch.qual, batch.roff, mate, DECODE))
                chunks.append(Chunk(i, os.path.abspath(finals[0]), os.path.abspath(finals[1]), batch.first, batch.n))
    except BaseException:
        for tmp, _ in written:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for tmp, final in written:
        os.replace(tmp, final)
    return SplitSummary(sum(c.pairs for c in chunks), chunks, round(time.perf_counter() - t0, 3))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.split",
                                 description="Split a FASTQ pair into chunks of N pairs, checking the pair.")
    ap.add_argument("r1", help="mate 1 FASTQ (plain or gzip)")
    ap.add_argument("r2", help="mate 2 FASTQ (plain or gzip)")
    ap.add_argument("--pairs", type=int, required=True, help="read pairs per chunk")
    ap.add_argument("-o", "--output", required=True, metavar="PREFIX",
                    help="writes PREFIX.cNNNN_R1.fastq.gz and PREFIX.cNNNN_R2.fastq.gz")
    ap.add_argument("--level", type=int, default=1, choices=range(0, 4), metavar="0-3",
                    help="gzip level of the chunks (ISA-L levels; default 1)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    a = ap.parse_args(argv)
    res = split(a.r1, a.r2, a.pairs, a.output, a.level)
    if a.json:
        json.dump(res.to_dict(), sys.stdout, indent=1)
        print()
    else:
        print(f"split {res.pairs:,} pairs into {len(res.chunks)} chunks in {res.seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.split")
