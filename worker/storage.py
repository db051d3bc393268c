"""Storage URIs: the worker's one seam to where data lives.

    /plain/path or file:///path    a local or shared (NAS) filesystem: used in place, never copied
    s3://bucket/key                S3 (boto3; endpoint from AWS_ENDPOINT_URL or GENEFARM_S3_ENDPOINT,
                                   credentials from the usual AWS variables or files)
    oss://bucket/key               Aliyun OSS (oss2; OSS_ENDPOINT, OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET)

Both object stores go through one code path (ObjectStore): only the five calls that differ
(head, download, upload, list, the error translation) are per store. Transfers use each SDK's
managed transfer (boto3 TransferManager, oss2 resumable up/download), which does multipart.
A "directory" in an object store is every key under PREFIX/.

Errors are StorageError with a kind: "missing" (no such object or file: bad input, not retried),
"denied" (no permission: bad input), "temporary" (network, throttling, 5xx: retried).
"""
import os
import shutil
from urllib.parse import urlparse

MULTIPART_THRESHOLD = int(float(os.environ.get("GENEFARM_MULTIPART_MB", "64")) * 1024 * 1024)


class StorageError(Exception):
    def __init__(self, uri, kind, detail):
        self.uri, self.kind, self.detail = uri, kind, detail
        what = {"missing": "does not exist", "denied": "cannot be read (permission denied)",
                "temporary": "could not be reached"}.get(kind, kind)
        hint = {"missing": "check the path or URI", "denied": "check the credentials and permissions",
                "temporary": "it will be retried"}.get(kind, "")
        super().__init__(f"{uri}: {what} ({detail}); {hint}")


def scheme(uri):
    p = urlparse(uri)
    return p.scheme if p.scheme in ("s3", "oss", "file") else ""


def is_remote(uri):
    return scheme(uri) in ("s3", "oss")


def local_path(uri):
    """The filesystem path of a plain path or file:// URI."""
    if uri.startswith("file://"):
        return urlparse(uri).path
    return uri


def join(uri, name):
    return uri.rstrip("/") + "/" + name


# ---------------------------------------------------------------- object stores

class ObjectStore:
    """What every object store does, on top of five store-specific calls."""

    def _split(self, uri):
        p = urlparse(uri)
        return p.netloc, p.path.lstrip("/")

    def stat(self, uri):
        bucket, key = self._split(uri)
        if not bucket or not key:
            raise StorageError(uri, "missing", "a URI needs a bucket and a key")
        return self._head(uri, bucket, key)

    def exists_prefix(self, uri):
        bucket, key = self._split(uri)
        return any(True for _ in self._list(uri, bucket, key.rstrip("/") + "/"))

    def fetch(self, uri, dest):
        """Object -> file dest, or every object under uri/ -> directory dest."""
        bucket, key = self._split(uri)
        try:
            self._head(uri, bucket, key)
            single = True
        except StorageError as e:
            if e.kind != "missing":
                raise
            single = False
        if single:
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            tmp = f"{dest}.part{os.getpid()}"
            self._download(uri, bucket, key, tmp)
            os.replace(tmp, dest)
            return dest
        prefix = key.rstrip("/") + "/"
        n = 0
        for k in self._list(uri, bucket, prefix):
            rel = k[len(prefix):]
            if not rel or rel.endswith("/"):
                continue
            out = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            self._download(uri, bucket, k, out + ".part")
            os.replace(out + ".part", out)
            n += 1
        if n == 0:
            raise StorageError(uri, "missing", "no such object or prefix")
        return dest

    def put(self, src, uri):
        """File src -> object uri, or directory src -> objects under uri/ (the files, then nothing else)."""
        bucket, key = self._split(uri)
        if os.path.isdir(src):
            files = [os.path.relpath(os.path.join(r, f), src) for r, _, fs in os.walk(src) for f in fs]
            # marker files (names starting with "_") last: a reader that sees them sees everything
            for rel in sorted(files, key=lambda r: (os.path.basename(r).startswith("_"), r)):
                self._upload(uri, os.path.join(src, rel), bucket, key.rstrip("/") + "/" + rel)
        else:
            self._upload(uri, src, bucket, key)


class S3Store(ObjectStore):
    def __init__(self, endpoint_url=None):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        endpoint_url = endpoint_url or os.environ.get("GENEFARM_S3_ENDPOINT") or None
        self.client = boto3.client("s3", endpoint_url=endpoint_url,
                                   config=Config(retries={"max_attempts": 3, "mode": "standard"}))
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                       multipart_chunksize=MULTIPART_THRESHOLD)

    def _error(self, uri, e):
        from botocore.exceptions import BotoCoreError, ClientError
        if isinstance(e, ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                return StorageError(uri, "missing", code)
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StorageError(uri, "denied", code)
            if status and status < 500 and code not in ("SlowDown", "RequestTimeout"):
                return StorageError(uri, "denied", code)
            return StorageError(uri, "temporary", code or str(status))
        if isinstance(e, BotoCoreError):
            return StorageError(uri, "temporary", type(e).__name__)
        return e

    def _call(self, uri, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001  (translated, or re-raised as is)
            raise self._error(uri, e) from None

    def _head(self, uri, bucket, key):
        h = self._call(uri, self.client.head_object, Bucket=bucket, Key=key)
        return {"size": h["ContentLength"], "etag": h.get("ETag", "").strip('"'),
                "mtime": str(h.get("LastModified", ""))}

    def _download(self, uri, bucket, key, dest):
        self._call(uri, self.client.download_file, bucket, key, dest, Config=self.transfer)

    def _upload(self, uri, src, bucket, key):
        self._call(uri, self.client.upload_file, src, bucket, key, Config=self.transfer)

    def _list(self, uri, bucket, prefix):
        pages = self._call(uri, lambda: list(self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)))
        for page in pages:
            for o in page.get("Contents", []):
                yield o["Key"]


class OSSStore(ObjectStore):
    """Aliyun OSS: the same code path as S3; only the SDK calls differ."""

    def __init__(self):
        import oss2
        self.oss2 = oss2
        self.auth = oss2.Auth(os.environ.get("OSS_ACCESS_KEY_ID", ""), os.environ.get("OSS_ACCESS_KEY_SECRET", ""))
        self.endpoint = os.environ.get("OSS_ENDPOINT", "")
        self._buckets = {}

    def _bucket(self, name):
        if name not in self._buckets:
            self._buckets[name] = self.oss2.Bucket(self.auth, self.endpoint, name)
        return self._buckets[name]

    def _call(self, uri, fn, *a, **kw):
        e_mod = self.oss2.exceptions
        try:
            return fn(*a, **kw)
        except (e_mod.NoSuchKey, e_mod.NoSuchBucket, e_mod.NotFound) as e:
            raise StorageError(uri, "missing", type(e).__name__) from None
        except (e_mod.AccessDenied,) as e:
            raise StorageError(uri, "denied", type(e).__name__) from None
        except e_mod.ServerError as e:
            kind = "temporary" if getattr(e, "status", 500) >= 500 or e.status == -1 else "denied"
            raise StorageError(uri, kind, f"{e.status} {getattr(e, 'code', '')}") from None
        except (e_mod.RequestError, OSError) as e:
            raise StorageError(uri, "temporary", type(e).__name__) from None

    def _head(self, uri, bucket, key):
        h = self._call(uri, self._bucket(bucket).head_object, key)
        return {"size": h.content_length, "etag": (h.etag or "").strip('"'), "mtime": str(h.last_modified)}

    def _download(self, uri, bucket, key, dest):
        self._call(uri, self.oss2.resumable_download, self._bucket(bucket), key, dest,
                   multiget_threshold=MULTIPART_THRESHOLD)

    def _upload(self, uri, src, bucket, key):
        self._call(uri, self.oss2.resumable_upload, self._bucket(bucket), key, src,
                   multipart_threshold=MULTIPART_THRESHOLD)

    def _list(self, uri, bucket, prefix):
        it = self._call(uri, lambda: list(self.oss2.ObjectIterator(self._bucket(bucket), prefix=prefix)))
        for o in it:
            yield o.key


_stores = {}


def store_for(uri):
    s = scheme(uri)
    if s not in _stores:
        _stores[s] = S3Store() if s == "s3" else OSSStore()
    return _stores[s]


# ---------------------------------------------------------------- the verbs

def stat(uri):
    """{size, etag|mtime} of a file or object; StorageError if it is missing or unreadable."""
    if is_remote(uri):
        return store_for(uri).stat(uri)
    p = local_path(uri)
    if not os.path.exists(p):
        raise StorageError(uri, "missing", "no such file")
    if not os.access(p, os.R_OK):
        raise StorageError(uri, "denied", "not readable by this user")
    if os.path.isdir(p):
        raise StorageError(uri, "missing", "is a directory, not a file")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        raise StorageError(uri, "denied", e.strerror or str(e)) from None
    st = os.stat(p)
    return {"size": st.st_size, "mtime": str(st.st_mtime_ns)}


def fetch(uri, scratch, name=None):
    """A local path holding uri's data: the path itself for a filesystem URI, else a download
    into scratch (a file, or a directory for an object-store prefix)."""
    if not is_remote(uri):
        p = local_path(uri)
        if not os.path.exists(p):
            raise StorageError(uri, "missing", "no such file or directory")
        if not os.access(p, os.R_OK):
            raise StorageError(uri, "denied", "not readable by this user")
        return p
    dest = os.path.join(scratch, name or os.path.basename(urlparse(uri).path.rstrip("/")) or "data")
    return store_for(uri).fetch(uri, dest)


def put(src, uri):
    """Deliver local file or directory src to uri. A filesystem destination is replaced in one
    rename (a directory: moved whole), so a half-copied output never looks complete."""
    if is_remote(uri):
        store_for(uri).put(src, uri)
        return
    dest = local_path(uri)
    if os.path.abspath(src) == os.path.abspath(dest):
        return
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = f"{dest}.incoming{os.getpid()}"
    if os.path.isdir(src):
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        try:
            os.rename(src, tmp)
        except OSError:
            shutil.copytree(src, tmp)
        if os.path.isdir(dest):
            old = f"{dest}.old{os.getpid()}"
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    else:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
