"""The data passed between the kernels' stages, named once: SAM flags, the BAM record layout,
and the numpy record types of the aligner's stages (locus -> candidate -> alignment).

Every kernel imports these from here; none defines them again.
"""
import numpy as np

# ---------------------------------------------------------------- SAM flags (SAM spec 1.4)
F_PAIRED, F_PROPER, F_UNMAP, F_MUNMAP, F_REVERSE, F_MREVERSE = 1, 2, 4, 8, 16, 32
F_READ1, F_READ2, F_SECONDARY, F_QCFAIL, F_DUP, F_SUPPL = 64, 128, 256, 512, 1024, 2048

# ---------------------------------------------------------------- BAM record layout (SAM spec 4.2)
# block_size (4) refID (4) pos (4) l_read_name (1) mapq (1) bin (2) n_cigar_op (2) flag (2)
# l_seq (4) next_refID (4) next_pos (4) tlen (4) = 36 bytes after which come the read name
# (NUL-terminated), the CIGAR (4 bytes per op), the 4-bit bases, the qualities and the tags.
BAM_FIXED = 36
MAX_NAME = 254           # l_read_name is one byte and counts the NUL
MAX_CIGAR_OPS = 65535    # n_cigar_op is two bytes

# ---------------------------------------------------------------- the aligner's stages

LOCUS = np.dtype([("dlo", np.int64), ("dhi", np.int64), ("qlo", np.int32), ("qhi", np.int32),
                  ("nhits", np.int32), ("cov", np.int32), ("rel", np.uint8)], align=True)
"""A group of colinear seed hits (kernels.chain), one record per locus:
    rel    relative strand (see kernels.seed)
    dlo    lowest diagonal of its hits (reference position of the oriented read's first base)
    dhi    highest diagonal
    qlo    first read base covered by its k-mers;  qhi  one past the last
    nhits  number of hits
    cov    read bases covered by the hits' k-mers"""

CAND = np.dtype([("rb", np.int64), ("re", np.int64), ("gdlo", np.int64), ("gdhi", np.int64),
                 ("score", np.int32), ("qb", np.int32), ("qe", np.int32), ("cov", np.int32),
                 ("tid", np.int32), ("rel", np.uint8), ("gapped", np.uint8)], align=True)
"""A read's candidate alignment (kernels.candidates):
    rb, re     reference interval of the aligned part (global coordinates, half-open)
    gdlo, gdhi diagonals of its seeds (global; the gapped alignment uses them +- BAND)
    score      alignment score;  qb, qe  aligned part of the oriented read (the rest clipped)
    cov        read bases covered by its seeds;  tid  contig;  rel  0 forward, 1 reverse
    gapped     1 if found by the banded alignment (its CIGAR needs the traceback)"""

ALN = np.dtype([("pos", np.int64), ("mpos", np.int64), ("tlen", np.int64), ("tid", np.int32),
                ("mtid", np.int32), ("score", np.int32), ("sub", np.int32), ("ncig", np.int32),
                ("flag", np.uint16), ("mapq", np.uint8), ("rev", np.uint8)], align=True)
"""A read's placement, what its BAM record says (kernels.place; one per read, read 2i and 2i+1
the mates of pair i when paired):
    flag   SAM flag                   tid/pos   contig index and 0-based position (-1 if none)
    mapq   mapping quality            rev       1 if the read is stored reverse-complemented
    score  AS (alignment score)       sub       XS (best other locus), -1 if not reported
    ncig   CIGAR ops, in the batch's cigar buffer at read * stride (cigar_stride)
    mtid/mpos  mate's contig and position      tlen  observed template length (signed)"""


def cigar_stride(longest_read):
    """Room for one read's CIGAR in a batch's cigar buffer: as many ops as the banded alignment's
    traceback can make for a read this long (an op per base and one between each, and clips)."""
    return 2 * int(longest_read) + 8
