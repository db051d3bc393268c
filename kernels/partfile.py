"""Part files: one alignment task's records grouped by the region each read starts in, so that a
calling task reads only its region (and the edges of its neighbours) from every part file.

One part file per alignment task, whatever the number of regions (files grow with chunks +
regions, never chunks x regions, and the aligner keeps one output open):
    P.bam              a BAM: the header, then the records in runs of BGZF blocks, every run
                       holding the records of one group only (samtools reads it as an unsorted BAM)
    P.bam.groups.npy   int64[G + 1]: group g's runs are rows groups[g]..groups[g+1] of blocks
    P.bam.blocks.npy   int64[runs, 4]: compressed offset, compressed size, inflated size, records
    P.bam.parts.json   what it holds: format, version, the regions' checksum and count, the flank,
                       records per group kind. Written last: a part file without it is incomplete.
Groups: region r has three, by where a read starts: 3r its head [start, start + flank), 3r + 2 its
tail [end - flank, end), 3r + 1 the rest (a region shorter than two flanks: head first, then tail);
group 3R (R regions) holds the pairs with no position. A read is placed where its record says:
its own position, or its mate's when it is unmapped and its mate is not.

A block of regions [lo, hi) needs groups 3lo .. 3hi - 1, the tail of region lo - 1 and the head of
region hi when they lie on the same contigs (`block_groups`): the reads within a flank of its
edges, which is what calling near an edge needs.
"""
import hashlib
import json
import os

import numpy as np
from isal import igzip

from kernels.errors import InputError

FORMAT = "genefarm-parts"
FORMAT_VERSION = 1
FLANK = 100_000          # bases of a region's head and tail groups (kernels.call reads its neighbours' ones)
def paths(part):
    return {"bam": part, "groups": part + ".groups.npy", "blocks": part + ".blocks.npy", "json": part + ".parts.json"}


def regions_checksum(reglist):
    d = hashlib.md5()
    for c, s, e in reglist:
        d.update(f"{c}\t{s}\t{e}\n".encode())
    return d.hexdigest()


def n_groups(nreg):
    return 3 * nreg + 1


def write_tables(path, rows, ngroups):
    """The group and block tables of a part file from its runs [(group, coffset, csize, usize, nrec)]
    in the order they were written (the sink calls this when it closes the file)."""
    ps = paths(path)
    rows = np.array(rows, np.int64).reshape(-1, 5)
    order = np.argsort(rows[:, 0], kind="stable")
    rows = rows[order]
    groups = np.zeros(ngroups + 1, np.int64)
    np.cumsum(np.bincount(rows[:, 0], minlength=ngroups)[:ngroups], out=groups[1:])
    for name, arr in (("groups", groups), ("blocks", np.ascontiguousarray(rows[:, 1:]))):
        tmp = f"{ps[name]}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, ps[name])


def write_manifest(path, reglist, flank, records, extra=None):
    """The JSON that completes a part file (after its BAM and tables)."""
    ps = paths(path)
    nreg = len(reglist)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "regions": nreg,
            "regions_md5": regions_checksum(reglist), "flank": int(flank), "groups": n_groups(nreg),
            "records": int(records.sum()), "unmapped_pairs_records": int(records[3 * nreg]),
            "records_per_region": [int(x) for x in records[:3 * nreg].reshape(-1, 3).sum(1)], **(extra or {})}
    tmp = f"{ps['json']}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, ps["json"])
    return meta


def remove(path):
    for p in paths(path).values():
        if os.path.exists(p):
            os.unlink(p)


def merge(final, parts_in, header_bytes_):
    """One part file from several of the same regions (the MPI ranks' ones), group by group, the
    parts in the order given; their BGZF runs are copied, never recompressed. Writes final's BAM
    and tables (not its manifest) and removes the inputs' files."""
    import pysam

    from kernels.bam import BGZF_EOF, _body_size, copy_range
    ins = [PartFile(p, need_manifest=False) for p in parts_in]
    ngroups = len(ins[0].groups) - 1
    tmp = f"{final}.tmp{os.getpid()}"
    with pysam.libcbgzf.BGZFile(tmp, "wb1") as f:
        f.write(header_bytes_)
    rows = []
    fd = os.open(tmp, os.O_RDWR)
    try:
        at = _body_size(fd, tmp)
        os.ftruncate(fd, at)
        os.lseek(fd, at, os.SEEK_SET)
        srcs = [os.open(p.path, os.O_RDONLY) for p in ins]
        try:
            for g in range(ngroups):
                for src, p in zip(srcs, ins):
                    for co, cs, us, nr in p.blocks[p.groups[g]:p.groups[g + 1]]:
                        copy_range(src, fd, int(co), int(cs))
                        rows.append((g, at, int(cs), int(us), int(nr)))
                        at += int(cs)
        finally:
            for s in srcs:
                os.close(s)
        os.write(fd, BGZF_EOF)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    write_tables(final, rows, ngroups)
    for p in parts_in:
        remove(p)


def copy_group(parts, group, out):
    """A BAM of one group of several part files (the first one's header), their BGZF runs copied as
    they are, under a temporary name first."""
    from kernels.bam import BGZF_EOF, copy_range
    tmp = f"{out}.tmp{os.getpid()}"
    first = min(int(parts[0].blocks[:, 0].min()), os.path.getsize(parts[0].path) - len(BGZF_EOF)) \
        if len(parts[0].blocks) else os.path.getsize(parts[0].path) - len(BGZF_EOF)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        src = os.open(parts[0].path, os.O_RDONLY)
        try:
            copy_range(src, fd, 0, first)          # the header's blocks
        finally:
            os.close(src)
        for p in parts:
            src = os.open(p.path, os.O_RDONLY)
            try:
                for co, cs, _, _ in p.runs([group]):
                    copy_range(src, fd, int(co), int(cs))
            finally:
                os.close(src)
        os.write(fd, BGZF_EOF)
    finally:
        os.close(fd)
    os.replace(tmp, out)


class PartFile:
    """A part file opened for reading (its tables memory-mapped)."""

    def __init__(self, path, need_manifest=True):
        self.path = path
        ps = paths(path)
        self.meta = None
        if need_manifest:
            try:
                with open(ps["json"]) as f:
                    self.meta = json.load(f)
            except FileNotFoundError:
                what = "its alignment did not finish" if os.path.exists(path) else "no such part file"
                raise InputError(f"{path}: {ps['json']} not found ({what}); align the chunk again") from None
            except (OSError, ValueError) as e:
                raise InputError(f"{ps['json']}: unreadable part file description ({e}); align the chunk again") from None
            if self.meta.get("format") != FORMAT or self.meta.get("format_version") != FORMAT_VERSION:
                raise InputError(f"{path}: not a genefarm part file of format version {FORMAT_VERSION}; "
                                 f"align the chunk again with this version")
        try:
            self.groups = np.load(ps["groups"], mmap_mode="r")
            self.blocks = np.load(ps["blocks"], mmap_mode="r")
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: its group tables cannot be read ({e}); align the chunk again") from None

    def check_regions(self, reglist):
        if self.meta["regions_md5"] != regions_checksum(reglist) or self.meta["regions"] != len(reglist):
            raise InputError(f"{self.path}: was written for other regions ({self.meta['regions']} regions) than "
                             f"the {len(reglist)} given; give the regions BED the chunk was aligned with")

    def runs(self, groups):
        """Rows of blocks (coffset, csize, usize, nrec) holding the given groups, in group order."""
        out = [self.blocks[self.groups[g]:self.groups[g + 1]] for g in groups]
        return np.concatenate(out) if out else np.empty((0, 4), np.int64)


def inflate_runs(path, runs, buf, at):
    """Inflate the BGZF runs of a file into buf from offset at; returns the new offset."""
    try:
        with open(path, "rb") as f:
            for co, cs, us, _ in runs:
                f.seek(int(co))
                data = igzip.decompress(f.read(int(cs)))
                if len(data) != us:
                    raise OSError(f"a run at {co} inflates to {len(data)} bytes, its table says {us}")
                buf[at:at + us] = np.frombuffer(data, np.uint8)
                at += int(us)
    except (OSError, EOFError, ValueError) as e:
        raise InputError(f"{path}: cannot read its records ({e}); is it truncated? align the chunk again") from None
    return at


def _prev_whole(reglist, lo, flank):
    """The region before a block is read whole when it is shorter than two flanks (its tail group
    then holds less than a flank: the head group has the reads of its first flank)."""
    _, a, b = reglist[lo - 1]
    return b - a < 2 * flank


def block_groups(reglist, lo, hi, flank, whole_contigs=False):
    """The groups a block of regions [lo, hi) reads: its own and its neighbours' edges on its
    contigs (or, whole_contigs, every region of the contigs it touches)."""
    if lo >= hi:
        return []
    if whole_contigs:
        cs = {reglist[i][0] for i in range(lo, hi)}
        sel = [i for i, r in enumerate(reglist) if r[0] in cs]
        return [3 * i + k for i in sel for k in range(3)]
    g = []
    if lo > 0 and reglist[lo - 1][0] == reglist[lo][0]:
        g += [3 * (lo - 1) + k for k in range(3)] if _prev_whole(reglist, lo, flank) else [3 * (lo - 1) + 2]
    g += list(range(3 * lo, 3 * hi))
    if hi < len(reglist) and reglist[hi][0] == reglist[hi - 1][0]:
        g.append(3 * hi)
    return g


def loaded_span(reglist, lo, hi, flank):
    """{contig: [a, b)}: the positions whose reads block_groups(reglist, lo, hi) holds, all of them."""
    span = {}
    for c, a, b in reglist[lo:hi]:
        s = span.setdefault(c, [a, b])
        s[0], s[1] = min(s[0], a), max(s[1], b)
    c0, a0, _ = reglist[lo]
    if lo > 0 and reglist[lo - 1][0] == c0:
        span[c0][0] = reglist[lo - 1][1] if _prev_whole(reglist, lo, flank) else a0 - flank
    c1, _, b1 = reglist[hi - 1]
    if hi < len(reglist) and reglist[hi][0] == c1:
        span[c1][1] = min(reglist[hi][2], b1 + flank)
    return span
