"""Reading a BAM record's fields from its raw bytes (the layout of kernels.types), in jitted code.
"""
import numpy as np

from kernels._numba import jit
from kernels.dna import NT16_CODE
from kernels.types import BAM_FIXED


@jit
def u16(b, p):
    return np.int64(b[p]) | (np.int64(b[p + 1]) << 8)


@jit
def i32(b, p):
    v = np.int64(b[p]) | (np.int64(b[p + 1]) << 8) | (np.int64(b[p + 2]) << 16) | (np.int64(b[p + 3]) << 24)
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@jit
def record_layout(raw, p):
    """(offset of the CIGAR, number of CIGAR ops, offset of the 4-bit bases, offset of the
    qualities, read length) of the record starting at raw[p]."""
    lname = np.int64(raw[p + 12])
    ncig = np.int64(raw[p + 16]) | (np.int64(raw[p + 17]) << 8)
    lseq = i32(raw, p + 20)
    c0 = p + BAM_FIXED + lname
    s0 = c0 + 4 * ncig
    q0 = s0 + (lseq + 1) // 2
    return c0, ncig, s0, q0, lseq


@jit
def base_at(raw, s0, i):
    v = np.int64(raw[s0 + (i >> 1)])
    return NT16_CODE[(v >> 4) if (i & 1) == 0 else (v & 15)]


