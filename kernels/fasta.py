"""Reference FASTA (plain, gzip or bgzip): streamed contig by contig, block by block, with checks.

A contig's bases become uint8 codes (kernels.dna); lower case is the same base, IUPAC ambiguity
codes become N. Each contig keeps the SAM M5 checksum of its sequence, so an index, a BAM
header and a reference can be checked against each other.

`stream_fasta(path)` never holds more than one block of the file (BLOCK bytes of text and their
codes), whatever the size of the genome or of its largest contig, and whether the sequence is
wrapped in lines or not: the index builds a human genome from it in bounded memory.
`read_fasta(path)` gathers the whole reference into one array (for small references and tests).
Both report bad input with the file and line.
"""
import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass

import numpy as np
from isal import igzip, isal_zlib

from kernels._numba import jit
from kernels.dna import ENCODE
from kernels.errors import InputError

# SAM spec: reference sequence names
_SAM_NAME = re.compile(rb"^[0-9A-Za-z!#$%&+./:;?@^_|~-][0-9A-Za-z!#$%&*+./:;=?@^_|~-]*$")
BLOCK = 8 << 20          # bytes of decompressed text handled at a time


@dataclass
class Reference:
    """Contigs of a reference, laid end to end in `seq`.

    names:   contig names, in file order
    lengths: int64[n] contig lengths
    offsets: int64[n+1] start of contig i in `seq` (offsets[n] = total length)
    seq:     uint8[total] base codes (0-3 = ACGT, 4 = N or IUPAC)
    m5:      md5 (hex) of each contig's upper-case sequence, as @SQ M5 in SAM
    """
    names: list
    lengths: np.ndarray
    offsets: np.ndarray
    seq: np.ndarray
    m5: list

    @property
    def total(self):
        return int(self.offsets[-1])

    def contig_of(self, gpos):
        """Index of the contig holding global position gpos."""
        return int(np.searchsorted(self.offsets, gpos, side="right") - 1)


@dataclass
class Contig:
    """A contig as stream_fasta reports it at its end: name, length, M5 and header line."""
    name: str
    length: int
    m5: str
    line: int


@jit
def encode_text(raw, table, codes, upper):
    """FASTA sequence text (line breaks included) -> base codes and the upper-case letters (for
    the M5), in one pass. Returns (bases written, index in raw of the first character that is not
    a base, or -1)."""
    j = 0
    for i in range(raw.shape[0]):
        c = raw[i]
        if c == 10 or c == 13:
            continue
        v = table[c]
        if v == 255:
            return j, i
        codes[j] = v
        upper[j] = c - 32 if 97 <= c <= 122 else c
        j += 1
    return j, -1


def encode_text_slow(raw):
    """The same with bytes methods: (codes, upper-case bytes, first bad index or -1)."""
    text = bytes(raw)
    clean = text.translate(None, b"\r\n")
    codes = ENCODE[np.frombuffer(clean, np.uint8)]
    r = np.frombuffer(text, np.uint8)
    bad = np.flatnonzero((ENCODE[r] == 255) & (r != 10) & (r != 13))
    if len(bad):
        j = int(np.count_nonzero((r[:bad[0]] != 10) & (r[:bad[0]] != 13)))
        return codes[:j], clean[:j].upper(), int(bad[0])
    return codes, clean.upper(), -1


def _open(path):
    """(reader of the file's text, the file itself): gzip or plain, with clear errors."""
    try:
        raw = open(path, "rb")
        magic = raw.read(2)
        raw.seek(0)
    except FileNotFoundError:
        raise InputError(f"{path}: no such FASTA file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a FASTA file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read FASTA file: {e.strerror}") from None
    return (igzip.open(raw, "rb") if magic == b"\x1f\x8b" else raw), raw


def _blocks(path, block, progress=None):
    """The file's decompressed text, block by block; progress(bytes of the file read) after each."""
    try:
        f, raw = _open(path)
        with raw, f:
            while True:
                b = f.read(block)
                if not b:
                    return
                if progress:
                    progress(raw.tell())
                yield b
    except EOFError:
        raise InputError(f"{path}: truncated gzip file (the compressed stream ends early); "
                         f"copy or download it again") from None
    except (gzip.BadGzipFile, igzip.BadGzipFile, zlib.error, isal_zlib.error) as e:
        raise InputError(f"{path}: corrupt gzip data ({e}); copy or download it again") from None


def stream_fasta(path, block=BLOCK, progress=None):
    """Events of a FASTA file, in order:
        ("start", name, header_line)  a contig begins
        ("seq", codes, None)          its next bases (uint8 codes; never empty)
        ("end", Contig, None)         it is complete (length and M5)
    Raises InputError naming the file and line on bad input (before the event that would use it).
    progress(bytes of the file read so far) is called after each block."""
    st = _Parser(path)
    for b in _blocks(path, block, progress):
        yield from st.feed(b)
    yield from st.finish()


class _Parser:
    """The state of stream_fasta between blocks: inside a header line or inside a sequence."""

    def __init__(self, path):
        self.path = path
        self.line = 1               # line number of the next byte
        self.header = None          # bytes of a header line being read (None: not in a header)
        self.header_line = 0
        self.at_line_start = True
        self.name = None            # current contig
        self.length = 0
        self.md5 = None
        self.seen = {}
        self.any = False            # a contig was started

    def feed(self, text):
        text = bytes(text)
        p = 0
        n = len(text)
        while p < n:
            if self.header is not None:
                e = text.find(b"\n", p)
                if e < 0:
                    self.header += text[p:]
                    return
                self.header += text[p:e]
                yield from self._end_header()
                self.line += 1
                self.at_line_start = True
                p = e + 1
                continue
            # sequence (or the text before the first header): up to the next '>'
            g = text.find(b">", p)
            if g < 0:
                yield from self._sequence(text, p, n)
                return
            if not (self.at_line_start if g == p else text[g - 1] == 10):
                yield from self._sequence(text, p, g + 1)     # a '>' inside a line: reported as a bad base
                raise AssertionError("unreachable: '>' is not a base")
            if g > p:
                yield from self._sequence(text, p, g)
            yield from self._end_contig()
            self.header = b""
            self.header_line = self.line
            p = g + 1

    def finish(self):
        if self.header is not None:
            yield from self._end_header()
        if not self.any:
            raise InputError(f"{self.path}: empty FASTA file: no sequence in it")
        yield from self._end_contig()

    def _sequence(self, text, a, b):
        raw = np.frombuffer(text, np.uint8, count=b - a, offset=a)
        codes = np.empty(b - a, np.uint8)
        upper = np.empty(b - a, np.uint8)
        nb, bad = encode_text(raw, ENCODE, codes, upper)
        if self.name is None and (nb or bad >= 0):
            seg = text[a:b]
            first = self.line + seg[:len(seg) - len(seg.lstrip(b"\r\n"))].count(b"\n")
            raise InputError(f"{self.path}: line {first}: expected a '>' header line; is this a FASTA file?")
        if bad >= 0:
            at = self.line + text.count(b"\n", a, a + bad)
            raise InputError(f"{self.path}: line {at}: character {chr(text[a + bad])!r} in sequence "
                             f"{self.name!r} is not a nucleotide (IUPAC codes only)")
        if nb:
            self.md5.update(memoryview(upper)[:nb])
            self.length += nb
            yield ("seq", codes[:nb], None)
        self.line += text.count(b"\n", a, b)
        self.at_line_start = text[b - 1] == 10

    def _end_header(self):
        header = self.header.rstrip(b"\r")
        self.header = None
        fields = header.split(None, 1)
        name = fields[0] if fields else b""
        line = self.header_line
        if not name:
            raise InputError(f"{self.path}: line {line}: sequence with an empty name after '>'")
        sname = name.decode(errors="replace")
        if not _SAM_NAME.match(name):
            raise InputError(f"{self.path}: line {line}: sequence name {sname!r} is not a valid SAM reference "
                             f"name (letters, digits and !#$%&+./:;?@^_|~- ; not starting with * or =)")
        if sname in self.seen:
            raise InputError(f"{self.path}: line {line}: duplicate sequence name {sname!r} (first seen at line "
                             f"{self.seen[sname]}); every contig needs a unique name")
        self.seen[sname] = line
        self.name, self.length, self.md5, self.any = sname, 0, hashlib.md5(), True
        yield ("start", sname, line)

    def _end_contig(self):
        if self.name is None:
            return
        if self.length == 0:
            raise InputError(f"{self.path}: line {self.seen[self.name]}: sequence {self.name!r} has no bases")
        c = Contig(self.name, self.length, self.md5.hexdigest(), self.seen[self.name])
        self.name = None
        yield ("end", c, None)


def read_fasta(path):
    """The whole reference in one array (Reference). Raises InputError naming the file and line."""
    names, seqs, m5, lengths = [], [], [], []
    for kind, a, _ in stream_fasta(path):
        if kind == "seq":
            seqs.append(a)
        elif kind == "end":
            names.append(a.name)
            lengths.append(a.length)
            m5.append(a.m5)
    lengths = np.array(lengths, dtype=np.int64)
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Reference(names, lengths, offsets, np.concatenate(seqs), m5)


def contig_table(path):
    """[Contig] of a FASTA file, streamed (names, lengths, M5s; nothing kept of the bases)."""
    return [a for kind, a, _ in stream_fasta(path) if kind == "end"]
