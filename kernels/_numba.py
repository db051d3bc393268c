"""Numba options for every kernel, in one place.

Every jitted function in `kernels` is made with `jit` (serial) or `pjit` (prange over threads)
from this module, so that the options are set once: cached on disk (LeanCache) under
NUMBA_CACHE_DIR, a persistent directory (compiling the aligner takes tens of seconds, loading it
from the cache about one), `nogil=True` so a Python thread (I/O, compression) runs beside a kernel.
Import this module before numba anywhere in the package: numba reads NUMBA_CACHE_DIR on import.
The cache lives in a subdirectory named after a digest of the kernels' source (see _cache_dir).
"""
import os

import hashlib
import shutil
import time


def _source_digest():
    """Digest of every kernel source file. numba invalidates a cached function when its own file
    changes, not when a jitted function it calls (in another file) does; keying the cache directory
    on all of kernels/ makes any change recompile everything once instead of running stale code."""
    here = os.path.dirname(os.path.abspath(__file__))
    d = hashlib.sha1()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as f:
                d.update(name.encode() + b"\0" + f.read())
    return d.hexdigest()[:16]


KEEP_UNUSED = 86400    # seconds: the cache of another kernel source is dropped after a day unused
HEX = set("0123456789abcdef")


def _touch(path):
    try:
        os.utime(path)
    except OSError:
        pass


def _cache_dir():
    # the user's NUMBA_CACHE_DIR (or ~/.cache/genefarm/numba, XDG_CACHE_HOME respected) / source digest
    base = os.environ.get("GENEFARM_NUMBA_CACHE_BASE") or os.environ.get("NUMBA_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "genefarm", "numba")
    os.environ["GENEFARM_NUMBA_CACHE_BASE"] = base      # children (MPI ranks, workers) keep the base
    digest = _source_digest()
    own = os.path.join(base, digest)
    _touch(own)        # used now (numba's loads write nothing): LeanCache touches it again on each load
    # drop the caches of other sources, so that the directory does not grow with every change, but
    # only those unused for a day: two versions may run side by side (an upgrade while a pipeline's
    # tasks still start on the old one, a benchmark beside a test run), and each would otherwise
    # delete the other's kernels at every start, to be compiled again in turn
    try:
        names = os.listdir(base)
    except OSError:
        names = []
    now = time.time()
    for old in names:
        p = os.path.join(base, old)
        if old == digest or len(old) != 16 or not set(old) <= HEX:
            continue                      # ours, or not a digest (NUMBA_CACHE_DIR may hold other things)
        try:
            if os.path.isdir(p) and now - os.path.getmtime(p) > KEEP_UNUSED:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass                          # removed by another process meanwhile
    return own


os.environ["NUMBA_CACHE_DIR"] = _cache_dir()

import numba  # noqa: E402  (must come after NUMBA_CACHE_DIR is set)
from numba.core.caching import FunctionCache  # noqa: E402
from numba.core.dispatcher import Dispatcher  # noqa: E402
from numba.core.runtime import nrt  # noqa: E402

OPTIONS = dict(nogil=True, error_model="numpy", boundscheck=False)
CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


class LeanCache(FunctionCache):
    """numba's on-disk cache of one function, loaded without refreshing the target context.

    On a cache hit numba 0.68 first calls target_context.refresh(): it imports and registers the
    implementation of every Python and numpy feature numba can compile (some ninety modules),
    0.13-0.18 s of every process that runs a kernel. Only compiling uses them, and the compiler
    refreshes the context itself when a function is not in the cache. Machine code loaded from
    the cache needs the NRT (the allocator and atomics it links against), which this starts;
    a prange kernel's thread pool is started by numba's own reload hooks. Each MPI rank and each
    pipeline task is a new process: for two ranks calling a small sample that start-up is most of
    what they cannot share. (numba PR #9806, closed unmerged, proposed deferring it upstream.)
    Each load also marks this source's cache directory used, for _cache_dir's clean-up."""

    def load_overload(self, sig, target_context):
        _touch(CACHE_DIR)
        nrt.rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def _decorate(opts, fn):
    cache = opts.pop("cache", True)

    def make(f):
        d = numba.njit(**opts)(f)
        if cache and isinstance(d, Dispatcher):      # not a plain function (NUMBA_DISABLE_JIT=1)
            d._cache = LeanCache(d.py_func)          # what cache=True would do, with the lean cache
        return d
    return make(fn) if fn is not None else make


def jit(fn=None, **extra):
    """numba.njit with the project's options (serial kernel)."""
    return _decorate(dict(OPTIONS, **extra), fn)


def pjit(fn=None, **extra):
    """numba.njit(parallel=True) with the project's options (kernel that uses prange)."""
    return _decorate(dict(OPTIONS, parallel=True, **extra), fn)


prange = numba.prange


def set_threads(n):
    """Threads used by pjit kernels in this process (at least 1, at most what numba started)."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def cache_is_warm():
    """True when compiled kernels for this source are already in the cache directory."""
    d = os.environ.get("NUMBA_CACHE_DIR", "")
    try:
        return any(os.scandir(d))
    except OSError:
        return False


def note_compile(stream=None):
    """Tell the user, once, that the first run compiles the kernels (it looks like a hang otherwise)."""
    import sys
    if not cache_is_warm():
        print(f"genefarm: first run with this version: compiling the kernels (about a minute; cached in "
              f"{os.environ.get('NUMBA_CACHE_DIR')})", file=stream or sys.stderr)
