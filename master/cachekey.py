"""Cache keys: finished work is found again by what it was made from.

key = sha256 of (stage, the identity of every input, params, region, kernel version), where an
input's identity is
    sha256:<hex>       the content of an input file (hashed once, remembered by uri+size+mtime);
                       a file over FULL_HASH_LIMIT is identified by its size and SAMPLES blocks spread
                       through it (a 100 GB FASTQ is not read whole by the master's loop)
    etag:<etag>        an object-store object (its content id as the store gives it)
    task:<key>/<path>  an output of an earlier task: the producer's cache key (itself a content key)
So a restarted master or a resubmitted sample finds every task whose key it has seen, and when a
key differs from the one an earlier run of the same task had, `explain` says which part changed.
"""
import hashlib
import json
import os

from worker import storage

_VERSION = None
FULL_HASH_LIMIT = 1 << 30          # files up to 1 GiB are hashed whole
SAMPLES, SAMPLE_BYTES = 64, 1 << 20


def kernel_version():
    """genefarm's version + a digest of the kernels' and worker's sources (a change re-runs work)."""
    global _VERSION
    if _VERSION is None:
        import kernels
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        d = hashlib.sha1()
        for pkg in ("kernels", "worker"):
            base = os.path.join(root, pkg)
            for name in sorted(os.listdir(base)):
                if name.endswith(".py"):
                    with open(os.path.join(base, name), "rb") as f:
                        d.update(f"{pkg}/{name}\0".encode() + f.read())
        _VERSION = f"{kernels.__version__}+{d.hexdigest()[:12]}"
    return _VERSION


def file_identity(uri, lookup=None, remember=None):
    """Content identity of an input file or object (StorageError if it is gone or unreadable).
    lookup(uri, size, mtime) -> sha or None and remember(uri, size, mtime, sha) memoise the hash."""
    st = storage.stat(uri)
    if storage.is_remote(uri):
        return f"etag:{st.get('etag', '')}:{st['size']}"
    mtime = st.get("mtime", "")
    if lookup:
        got = lookup(uri, st["size"], mtime)
        if got:
            return f"sha256:{got}"
    h = hashlib.sha256()
    size = int(st["size"])
    with open(storage.local_path(uri), "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        else:
            h.update(f"sampled:{size}:{SAMPLES}x{SAMPLE_BYTES}\0".encode())
            for i in range(SAMPLES):
                f.seek(min(size - SAMPLE_BYTES, i * (size - SAMPLE_BYTES) // (SAMPLES - 1)))
                h.update(f.read(SAMPLE_BYTES))
    sha = h.hexdigest()
    if remember:
        remember(uri, st["size"], mtime, sha)
    return f"sha256:{sha}"


def make_key(stage, input_ids, params, region, version):
    blob = json.dumps({"stage": stage, "inputs": input_ids, "params": params, "region": region,
                       "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def diff(old, new):
    """What differs between two resolved bases, in words (for explain)."""
    out = []
    for k in sorted(set(old.get("inputs", {})) | set(new.get("inputs", {}))):
        a, b = old.get("inputs", {}).get(k), new.get("inputs", {}).get(k)
        if a != b:
            out.append(f"input {k} changed ({_short(a)} -> {_short(b)})")
    for k in sorted(set(old.get("params", {})) | set(new.get("params", {}))):
        a, b = old.get("params", {}).get(k), new.get("params", {}).get(k)
        if a != b:
            out.append(f"parameter {k} changed ({a!r} -> {b!r})")
    if old.get("region") != new.get("region"):
        out.append(f"region changed ({old.get('region')} -> {new.get('region')})")
    if old.get("version") != new.get("version"):
        out.append(f"kernel version changed ({old.get('version')} -> {new.get('version')})")
    return out


def _short(v):
    if isinstance(v, list):
        return f"{len(v)} files"
    s = str(v)
    return s if len(s) <= 40 else s[:37] + "..."
