"""Alignment scoring and the aligner's tunable constants, passed to kernels as one int32 array.

The scores are bwa mem's defaults, so AS/XS mean the same as in the BAMs users know:
match +1, mismatch -4, gap of length l -(6 + l), a soft clip at either end -5, N against
anything -1, a pair not placed as a proper pair -17, alignments scoring below 30 are not reported.
The array is an argument (not a global constant) so numba's cache never holds a stale value.
"""
import numpy as np

# indices into the parameter array
MATCH, MISMATCH, GAP_OPEN, GAP_EXT, CLIP, N_PEN, UNPAIRED, MIN_SCORE = range(8)
BAND, MAX_OCC, MAX_CAND, CLUSTER_GAP, MAX_HITS, RESCUE_MIN, DROP_RATIO, LOW_OCC, TIER_COVER = range(8, 17)
NPARAMS = 17

DEFAULTS = {
    MATCH: 1, MISMATCH: 4, GAP_OPEN: 6, GAP_EXT: 1, CLIP: 5, N_PEN: 1, UNPAIRED: 17, MIN_SCORE: 30,
    BAND: 20,          # extra diagonals on each side of the seeds' for the gapped alignment
    MAX_OCC: 500,      # minimizers with more occurrences are not used as seeds (repeats)
    MAX_CAND: 16,      # loci aligned per read
    CLUSTER_GAP: 64,   # seeds whose diagonals differ by at most this belong to one locus
    MAX_HITS: 20000,   # seed hits kept per read
    RESCUE_MIN: 20,    # a mate found by rescue must score at least this
    DROP_RATIO: 50,    # loci with less than this % of the best locus' seed coverage are not extended
    LOW_OCC: 16,       # first tier of seeding: only minimizers seen at most this often...
    TIER_COVER: 60,    # ...unless the best locus then covers less than this % of the read
}


def params(**over):
    """int32 parameter array; keyword names are the lower-case constant names (match=2, band=30...)."""
    p = np.zeros(NPARAMS, dtype=np.int32)
    for i, v in DEFAULTS.items():
        p[i] = v
    g = globals()
    for name, v in over.items():
        p[g[name.upper()]] = v
    return p


def base_score(q, r, p):
    """Score of read base q against reference base r (codes), plain Python."""
    if q > 3 or r > 3:
        return -p[N_PEN]
    return p[MATCH] if q == r else -p[MISMATCH]
