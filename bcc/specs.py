"""Parsing and checking what users type: mount specs, disk specs, host lists, CIDR blocks.

Everything here raises BadInput with what is wrong and what a good value looks like, before
anything is created.
"""
import ipaddress
import re
from dataclasses import dataclass

from bcc.errors import BadInput


@dataclass(frozen=True)
class Mount:
    """One `-m` item. kind: nas (NFS, read-write), s3 or oss (object store prefix, read-only)."""
    kind: str
    dst: str                 # absolute mount point on every worker
    server: str = ""         # nas: the NFS server
    path: str = ""           # nas: the exported path
    bucket: str = ""         # s3/oss
    prefix: str = ""         # s3/oss: key prefix ("" = the whole bucket)

    @property
    def read_only(self):
        return self.kind != "nas"

    @property
    def uri(self):
        if self.kind == "nas":
            return f"nas://{self.server}:{self.path}"
        return f"{self.kind}://{self.bucket}/{self.prefix}"


_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_MOUNT_HELP = ("expected nas://SERVER:/PATH:/DST (NFS, read-write), s3://BUCKET/PREFIX/:/DST or "
               "oss://BUCKET/PREFIX/:/DST (read-only), comma-separated")


def _abs_path(p, what, item):
    if not p.startswith("/") or "//" in p or "/../" in p + "/" or any(c in p for c in " \t\n'\"\\$`;"):
        raise BadInput(f"mount '{item}': {what} '{p}' must be an absolute path without spaces, quotes or '..'; "
                       + _MOUNT_HELP)
    return p.rstrip("/") or "/"


def parse_mount(item):
    item = item.strip()
    m = re.fullmatch(rf"nas://({_HOST}):(/[^:]*):(/[^:]*)", item)
    if m:
        server, path, dst = m.groups()
        return Mount("nas", _abs_path(dst, "mount point", item), server=server, path=_abs_path(path, "export", item))
    m = re.fullmatch(r"(s3|oss)://([^/:]+)/([^:]*):(/[^:]*)", item)
    if m:
        kind, bucket, prefix, dst = m.groups()
        if not re.fullmatch(_BUCKET, bucket):
            raise BadInput(f"mount '{item}': '{bucket}' is not a valid bucket name (3-63 of a-z 0-9 . -)")
        if any(c in prefix for c in " \t\n'\"\\$`;") or ".." in prefix:
            raise BadInput(f"mount '{item}': prefix '{prefix}' has characters bcc does not pass to a mount")
        return Mount(kind, _abs_path(dst, "mount point", item), bucket=bucket, prefix=prefix)
    raise BadInput(f"mount '{item}' is malformed: {_MOUNT_HELP}")


def parse_mounts(text):
    """'-m' value -> [Mount]; mount points must be distinct."""
    if not text:
        return []
    mounts = [parse_mount(x) for x in text.split(",") if x.strip()]
    seen = {}
    for m in mounts:
        if m.dst in seen:
            raise BadInput(f"mounts '{seen[m.dst]}' and '{m.uri}' both use mount point {m.dst}: give each its own")
        if m.dst in ("/", "/etc", "/usr", "/var", "/bin", "/sbin", "/lib", "/boot", "/proc", "/sys", "/dev", "/run"):
            raise BadInput(f"mount point {m.dst} would hide a system directory: choose another, e.g. /data")
        seen[m.dst] = m.uri
    return mounts


@dataclass(frozen=True)
class Disk:
    kind: str       # provider's disk type (see `bcc disk`)
    size_gb: int


def parse_disks(text, kinds, default_kind):
    """'-d' value: SIZE or KIND:SIZE, comma-separated (GB) -> [Disk]."""
    if not text:
        return []
    disks = []
    for item in text.split(","):
        item = item.strip()
        kind, _, size = item.rpartition(":")
        kind = kind or default_kind
        if not size.isdigit() or not 1 <= int(size) <= 65536:
            raise BadInput(f"disk '{item}': size must be a whole number of GB from 1 to 65536 "
                           f"(e.g. 100 or {default_kind}:100)")
        if kind not in kinds:
            raise BadInput(f"disk '{item}': unknown disk type '{kind}'; this provider has: {', '.join(kinds)} "
                           "(see `bcc disk`)")
        disks.append(Disk(kind, int(size)))
    return disks


@dataclass(frozen=True)
class HostSpec:
    """A host reached over SSH: NAME=USER@ADDRESS[:PORT]."""
    name: str
    user: str
    address: str
    port: int = 22

    def __str__(self):
        return f"{self.name}={self.user}@{self.address}:{self.port}"


def parse_host(item):
    m = re.fullmatch(rf"(?:({_HOST})=)?(?:([a-z_][a-z0-9_-]*)@)?([0-9.]+)(?::(\d+))?", item.strip())
    if not m:
        raise BadInput(f"host '{item}' is malformed: expected NAME=USER@ADDRESS[:PORT], e.g. node1=root@10.0.0.11:22")
    name, user, addr, port = m.groups()
    try:
        ipaddress.IPv4Address(addr)
    except ValueError:
        raise BadInput(f"host '{item}': '{addr}' is not an IPv4 address") from None
    port = int(port or 22)
    if not 1 <= port <= 65535:
        raise BadInput(f"host '{item}': port {port} is out of range")
    return HostSpec(name or "", user or "root", addr, port)


def parse_hosts(text):
    hosts = [parse_host(x) for x in (text or "").split(",") if x.strip()]
    names = [h.name for h in hosts if h.name]
    if len(set(names)) != len(names):
        raise BadInput(f"hosts: a name is given twice in {names}")
    return hosts


def parse_cidr(text, master_net):
    """--vpc_cidr_block: must lie inside the master's network (the workers must reach the master)."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise BadInput(f"--vpc_cidr_block '{text}' is not a CIDR block ({e}); e.g. 10.0.1.0/24") from None
    if master_net is not None and not net.subnet_of(master_net):
        raise BadInput(f"--vpc_cidr_block {net} is outside the master's network {master_net}: the workers could not "
                       f"reach the master; give a block inside {master_net} (or leave the option out)")
    return net


def check_name(kind, value):
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", value or ""):
        raise BadInput(f"{kind} '{value}' is not valid: a letter, then up to 31 letters, digits, '-' or '_'")
    return value
