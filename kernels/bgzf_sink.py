"""The BGZF compressor child of kernels.bam.BamWriter.

pysam's BGZFile.write holds the Python GIL while it compresses, which stalls every other thread
of the aligner (reading, dispatching kernels); in a process of its own it overlaps with them.
It reads framed messages on stdin and writes BGZF files with htslib; several files may be open
at once (the aligner's per-region part files):
    b"F" <u32 length> <path>    open a new file and make it the current one
    b"S" <u32 length> <path>    make an open file the current one
    b"D" <u64 length> <bytes>   data for the current file
    b"C"                        close the current file
    b"P" <u32 length> <path> <u32 groups>   open a part file (kernels.parts): its header comes
                                as D data, then its records group by group:
    b"G" <u32 group> <u32 records> <u64 length> <bytes>   a run of one group's records, in BGZF
                                blocks of their own; on C the part file's tables are written
The level is argv[1]. Exit 0 once stdin ends and every file is closed; any error: exit 1 with
the reason on stderr (the parent reports it).
"""
import struct
import sys

import pysam.libcbgzf

from kernels.partfile import write_tables

PIECE = 4 << 20


def _read(f, n):
    b = f.read(n)
    if len(b) != n:
        raise EOFError("the aligner closed the pipe in the middle of a message")
    return b


def main():
    level = int(sys.argv[1])
    inp = sys.stdin.buffer
    files = {}
    grouped = {}                  # part file -> (number of groups, runs written)
    cur = None
    try:
        while True:
            t = inp.read(1)
            if not t:
                break
            if t in (b"F", b"S"):
                (n,) = struct.unpack("<I", _read(inp, 4))
                path = _read(inp, n).decode()
                if t == b"F":
                    if path in files:
                        raise ValueError(f"{path} is already open")
                    files[path] = pysam.libcbgzf.BGZFile(path, f"wb{level}")
                cur = path
            elif t == b"D":
                (n,) = struct.unpack("<Q", _read(inp, 8))
                f = files[cur]
                while n > 0:
                    piece = _read(inp, min(n, PIECE))
                    f.write(piece)
                    n -= len(piece)
            elif t == b"P":
                (n,) = struct.unpack("<I", _read(inp, 4))
                path = _read(inp, n).decode()
                (ng,) = struct.unpack("<I", _read(inp, 4))
                if path in files:
                    raise ValueError(f"{path} is already open")
                files[path] = pysam.libcbgzf.BGZFile(path, f"wb{level}")
                grouped[path] = (ng, [])
                cur = path
            elif t == b"G":
                g, nrec, n = struct.unpack("<IIQ", _read(inp, 16))
                f = files[cur]
                f.flush()                          # the run starts a block of its own
                start = f.tell() >> 16
                size = n
                while n > 0:
                    piece = _read(inp, min(n, PIECE))
                    f.write(piece)
                    n -= len(piece)
                f.flush()
                end = f.tell() >> 16
                grouped[cur][1].append((g, start, end - start, size, nrec))
            elif t == b"C":
                files.pop(cur).close()
                if cur in grouped:
                    ng, rows = grouped.pop(cur)
                    write_tables(cur, rows, ng)
                cur = None
            else:
                raise ValueError(f"unknown message {t!r}")
        for f in files.values():
            f.close()
    except Exception as e:  # noqa: BLE001  (the parent turns this into its error)
        print(f"bgzf_sink: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
