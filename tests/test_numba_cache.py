"""kernels._numba's on-disk cache: a kernel loaded from it in a new process runs without numba
refreshing its target context first (LeanCache), and gives what the compiled kernel gave.

Each step is a new Python process, as every MPI rank and pipeline task is, with a cache
directory of its own, so the first process compiles whatever the test session did before."""
import json
import os
import subprocess
import sys
import time

import numpy as np

MODULE = '''
import numpy as np
from kernels._numba import jit, pjit, prange


@jit
def doubled_cumsum(a):
    out = np.empty(len(a), a.dtype)        # allocates: the loaded code needs numba's runtime (NRT)
    s = a.dtype.type(0)
    for i in range(len(a)):
        s += a[i]
        out[i] = 2 * s
    return out


@pjit
def row_sums(m):
    out = np.zeros(m.shape[0])
    for i in prange(m.shape[0]):           # a thread pool, started by numba's reload hooks
        for j in range(m.shape[1]):
            out[i] += m[i, j]
    return out
'''

RUN = '''
import json, os, sys
import kernels._numba          # first, as in the package: it sets NUMBA_CACHE_DIR before numba is imported
import numpy as np
from numba.core.base import BaseContext

refreshed = []
real = BaseContext.refresh


def spy(self):
    refreshed.append(1)
    return real(self)


BaseContext.refresh = spy
import leanmod as m

a = np.arange(1, 60, dtype=np.int64)
g = np.random.default_rng(7).random((40, 9))
out = {"cumsum": m.doubled_cumsum(a).tolist(), "rows": m.row_sums(g).tolist()}
out["stats"] = {name: [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]
                for name, f in (("cumsum", m.doubled_cumsum), ("rows", m.row_sums))}
out["refreshed"] = len(refreshed)
out["cache_path"] = m.doubled_cumsum._cache.cache_path
if sys.argv[1] == "new-signature":          # float64 was never compiled: numba compiles it here
    out["cumsum_float"] = m.doubled_cumsum(a.astype(np.float64)).tolist()
    out["refreshed_after"] = len(refreshed)
print(json.dumps(out))
'''


def python(code, cache_base, *args, cwd=None, **env):
    """stdout of `python -c code args` in a new process whose kernels cache under cache_base."""
    env = dict(os.environ, GENEFARM_NUMBA_CACHE_BASE=str(cache_base), **env)
    env.pop("NUMBA_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def run(tmp_path, what):
    return json.loads(python(RUN, tmp_path / "cache", what, cwd=tmp_path))


def test_a_cached_kernel_loads_without_the_refresh_and_gives_the_same(tmp_path):
    (tmp_path / "leanmod.py").write_text(MODULE)
    a = np.arange(1, 60, dtype=np.int64)
    g = np.random.default_rng(7).random((40, 9))
    twin_cumsum = [2 * int(x) for x in np.cumsum(a)]
    twin_rows = []
    for row in g.tolist():                 # the same order of additions as the kernel's
        s = 0.0
        for x in row:
            s += x
        twin_rows.append(s)

    first = run(tmp_path, "same")
    assert first["cache_path"].startswith(str(tmp_path / "cache") + os.sep)     # the project's cache directory
    assert first["stats"] == {"cumsum": [0, 1], "rows": [0, 1]}        # compiled and saved
    assert first["refreshed"] >= 1                                     # the compiler refreshes
    assert first["cumsum"] == twin_cumsum and first["rows"] == twin_rows

    second = run(tmp_path, "same")
    assert second["stats"] == {"cumsum": [1, 0], "rows": [1, 0]}       # both loaded from the cache
    assert second["refreshed"] == 0
    assert second["cumsum"] == twin_cumsum and second["rows"] == twin_rows

    third = run(tmp_path, "new-signature")      # loaded lean, then a signature not in the cache
    assert third["refreshed"] == 0 and third["refreshed_after"] >= 1
    assert third["cumsum_float"] == [float(x) for x in twin_cumsum]


def test_caches_of_other_sources_are_dropped_only_when_unused(tmp_path):
    """A process drops the cache directories of other kernel sources (so edits and upgrades do not
    pile them up), but not one another version used within the day: during an upgrade the old
    version's tasks still start, and would otherwise compile every kernel again in turn."""
    base = tmp_path / "cache"
    idle, recent, other = base / "0123456789abcdef", base / "fedcba9876543210", base / "numba-user-stuff"
    for d in (idle, recent, other):
        (d / "kernels_x").mkdir(parents=True)
    days_ago = time.time() - 2 * 86400
    os.utime(idle, (days_ago, days_ago))
    os.utime(other, (days_ago, days_ago))
    own = python("import os, kernels._numba; print(os.environ['NUMBA_CACHE_DIR'])", base).strip()
    assert os.path.dirname(own) == str(base) and len(os.path.basename(own)) == 16
    assert not idle.exists()                       # another source's, unused for two days
    assert recent.exists() and other.exists()      # used within the day; not a digest

    # its own directory is marked used at every start
    os.makedirs(own)
    os.utime(own, (days_ago, days_ago))
    python("import kernels._numba", base)
    assert time.time() - os.path.getmtime(own) < 600


def test_kernels_import_and_run_with_the_jit_disabled(tmp_path):
    """NUMBA_DISABLE_JIT=1 (debugging a kernel in Python, measuring coverage) leaves plain
    functions, which have no cache to set."""
    code = ("import kernels.call, kernels.align; from kernels.genotype import n_genotypes; "
            "print(type(n_genotypes).__name__, n_genotypes(3))")
    assert python(code, tmp_path / "cache", NUMBA_DISABLE_JIT="1").split() == ["function", "6"]
