"""Progress lines on stderr for long kernel runs (a build of a human index takes minutes).

One line every EVERY seconds at most, and one at each phase change: what is done, of how much,
the resident memory and the time so far. Talk only: nothing here goes to stdout.
"""
import resource
import sys
import time

EVERY = 10.0


class Progress:
    def __init__(self, prog, input_bytes=0, stream=None, every=EVERY):
        self.prog, self.size, self.stream, self.every = prog, input_bytes, stream or sys.stderr, every
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.done_bytes = 0
        self.contigs = 0
        self.what = "reading"

    def _line(self, text, force=False):
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{self.prog}: {text}; peak {rss:,.0f} MB, {now - self.t0:,.0f} s", file=self.stream, flush=True)

    def read(self, nbytes):
        self.done_bytes = nbytes
        pct = f" ({100 * nbytes / self.size:.0f}%)" if self.size else ""
        self._line(f"{self.what}: {nbytes / 1e9:,.2f} of {self.size / 1e9:,.2f} GB of the input{pct}, "
                   f"{self.contigs:,} contigs")

    def contig(self, n):
        self.contigs = n

    def phase(self, text):
        self.what = text
        self._line(text, force=True)

    def partition(self, i, n):
        self._line(f"{self.what}: {i} of {n} done", force=(i == n))
