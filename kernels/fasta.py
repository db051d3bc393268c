"""Read a reference FASTA (plain, gzip or bgzip) into one array of base codes, with checks.

Every contig becomes a slice of one uint8 array (codes of kernels.dna); lower case is the same
base, IUPAC ambiguity codes become N. Each contig keeps the SAM M5 checksum of its sequence, so an
index, a BAM header and a reference can be checked against each other.
"""
import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass

import numpy as np
from isal import igzip, isal_zlib

from kernels.dna import ENCODE
from kernels.errors import InputError

# SAM spec: reference sequence names
_SAM_NAME = re.compile(rb"^[0-9A-Za-z!#$%&+./:;?@^_|~-][0-9A-Za-z!#$%&*+./:;=?@^_|~-]*$")


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


def read_bytes(path, what="file"):
    """Whole content of a plain or gzip-compressed file, with a clear error when it cannot be read."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a {what}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror}") from None
    try:
        if magic == b"\x1f\x8b":
            with igzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except EOFError:
        raise InputError(f"{path}: truncated gzip file (the compressed stream ends early); "
                         f"copy or download it again") from None
    except (gzip.BadGzipFile, igzip.BadGzipFile, zlib.error, isal_zlib.error) as e:
        raise InputError(f"{path}: corrupt gzip data ({e}); copy or download it again") from None


def read_fasta(path):
    """Parse a FASTA file into a Reference. Raises InputError naming the file and line on bad input."""
    text = read_bytes(path, "FASTA file").replace(b"\r", b"")
    body_start = len(text) - len(text.lstrip(b"\n"))
    first_line = body_start + 1
    text = text[body_start:]
    if not text.strip():
        raise InputError(f"{path}: empty FASTA file: no sequence in it")
    if not text.startswith(b">"):
        raise InputError(f"{path}: line {first_line}: expected a '>' header line; is this a FASTA file?")
    names, seqs, m5 = [], [], []
    seen = {}
    line = first_line
    for chunk in text[1:].split(b"\n>"):
        nl = chunk.find(b"\n")
        header, body = (chunk, b"") if nl < 0 else (chunk[:nl], chunk[nl + 1:])
        fields = header.split(None, 1)
        name = fields[0] if fields else b""
        if not name:
            raise InputError(f"{path}: line {line}: sequence with an empty name after '>'")
        sname = name.decode(errors="replace")
        if not _SAM_NAME.match(name):
            raise InputError(f"{path}: line {line}: sequence name {sname!r} is not a valid SAM reference "
                             f"name (letters, digits and !#$%&+./:;?@^_|~- ; not starting with * or =)")
        if name in seen:
            raise InputError(f"{path}: line {line}: duplicate sequence name {sname!r} (first seen at line "
                             f"{seen[name]}); every contig needs a unique name")
        seen[name] = line
        seq = body.replace(b"\n", b"")
        if not seq:
            raise InputError(f"{path}: line {line}: sequence {sname!r} has no bases")
        codes = ENCODE[np.frombuffer(seq, dtype=np.uint8)]
        if codes.max() == 255:
            bad_at = int(np.argmax(codes == 255))
            # map the offset in the joined sequence back to a line of the file
            lens = np.cumsum([len(x) for x in body.split(b"\n")])
            bad_line = line + 1 + int(np.searchsorted(lens, bad_at, side="right"))
            raise InputError(f"{path}: line {bad_line}: character {chr(seq[bad_at])!r} in sequence {sname!r} "
                             f"is not a nucleotide (IUPAC codes only)")
        names.append(sname)
        seqs.append(codes)
        m5.append(hashlib.md5(seq.upper()).hexdigest())
        line += chunk.count(b"\n") + 1
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Reference(names, lengths, offsets, np.concatenate(seqs), m5)
