"""Base encoding shared by every kernel: A C G T = 0 1 2 3, anything else (N, IUPAC) = 4.

Sequences are numpy uint8 arrays of these codes; lower case is the same base. In a BAM record a
base is a 4-bit code (=ACMGRSVTWYHKDBN), see `BAM_NT16`.
"""
import numpy as np

N = 4
# IUPAC nucleotide codes accepted in a reference (upper and lower case); all but ACGT become N.
IUPAC = b"ACGTNRYSWKMBDHVU"

ENCODE = np.full(256, 255, dtype=np.uint8)      # 255 = not a nucleotide letter
for _c in IUPAC:
    ENCODE[_c] = N
    ENCODE[ord(chr(_c).lower())] = N
for _i, _c in enumerate(b"ACGT"):
    ENCODE[_c] = _i
    ENCODE[ord(chr(_c).lower())] = _i
ENCODE[ord(".")] = N        # some FASTQ writers use '.' for an unknown base

DECODE = np.frombuffer(b"ACGTN", dtype=np.uint8).copy()
COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)
# code -> 4-bit BAM nucleotide (A=1, C=2, G=4, T=8, N=15)
BAM_NT16 = np.array([1, 2, 4, 8, 15], dtype=np.uint8)
# 4-bit BAM nucleotide -> code (A C G T = 0 1 2 3, anything else 4)
NT16_CODE = np.array([4, 0, 1, 4, 2, 4, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4], np.uint8)


def encode(seq):
    """bytes/str -> uint8 codes (raises ValueError on a character that is not a base)."""
    if isinstance(seq, str):
        seq = seq.encode()
    codes = ENCODE[np.frombuffer(seq, dtype=np.uint8)]
    if codes.size and codes.max() == 255:
        bad = chr(seq[int(np.argmax(codes == 255))])
        raise ValueError(f"not a nucleotide: {bad!r}")
    return codes


def decode(codes):
    return DECODE[np.asarray(codes)].tobytes().decode()


def revcomp(codes):
    return COMPLEMENT[np.asarray(codes)[::-1]]
