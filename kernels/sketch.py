"""Minimizer sketch of a sequence: the seeds shared by the index and the reads.

A k-mer's canonical form is the smaller (as a 2k-bit integer) of the k-mer and its reverse
complement; k is odd, so no k-mer is its own reverse complement. Its hash is an invertible 64-bit
integer hash of the canonical k-mer restricted to 2k bits, so two k-mers have the same hash only
if they are the same canonical k-mer. In every window of `w` consecutive k-mers (inside a run of
ACGT, never across an N) the k-mer with the smallest hash is selected (the leftmost one on a tie);
a run with fewer than `w` k-mers selects its smallest. A window of w k-mers shared by a read and
the reference therefore selects the same k-mer in both.

Output of a sketch, one entry per selected k-mer, in increasing position:
    hashes  uint64  hash of the canonical k-mer
    pos     int64   position of the k-mer's first base in the input sequence
    strand  uint8   0 if the k-mer as read is the canonical one, 1 if its reverse complement is
"""
import numpy as np

from kernels._numba import jit


@jit
def hash64(key, mask):
    """Thomas Wang's 64-bit integer hash, invertible on the bits of `mask` (uint64 in, uint64 out)."""
    key = (~key + (key << np.uint64(21))) & mask
    key = key ^ (key >> np.uint64(24))
    key = (key + (key << np.uint64(3)) + (key << np.uint64(8))) & mask
    key = key ^ (key >> np.uint64(14))
    key = (key + (key << np.uint64(2)) + (key << np.uint64(4))) & mask
    key = key ^ (key >> np.uint64(28))
    key = (key + (key << np.uint64(31))) & mask
    return key


@jit
def sketch_into(seq, start, end, k, w, scratch, out_h, out_p, out_s, n_out):
    """Append the minimizers of seq[start:end] to out_* from index n_out; return the new count,
    or -1 if the output arrays are too small. `scratch` is uint64[end - start] (k-mer hashes of a run)."""
    mask = (np.uint64(1) << np.uint64(2 * k)) - np.uint64(1)
    shift = np.uint64(2 * (k - 1))
    cap = out_h.shape[0]
    fwd = np.uint64(0)
    rev = np.uint64(0)
    run = 0            # consecutive ACGT bases ending at i
    m = 0              # k-mers of the current run held in scratch
    i = start
    while i <= end:
        c = seq[i] if i < end else np.uint8(4)
        if c < 4:
            fwd = ((fwd << np.uint64(2)) | np.uint64(c)) & mask
            rev = (rev >> np.uint64(2)) | (np.uint64(3 - c) << shift)
            run += 1
            if run >= k:
                scratch[m] = hash64(rev if rev < fwd else fwd, mask)
                m += 1
        if (c >= 4) and m > 0:
            # the run of k-mers ends here: select its window minima
            run_first = i - (m + k - 1)          # position of the run's first k-mer
            ww = w if w < m else m
            cur = -1
            last = -1
            for j in range(0, m - ww + 1):
                if cur < j:
                    cur = j
                    for t in range(j + 1, j + ww):
                        if scratch[t] < scratch[cur]:
                            cur = t
                else:
                    t = j + ww - 1
                    if scratch[t] < scratch[cur]:
                        cur = t
                if cur != last:
                    if n_out >= cap:
                        return -1
                    out_h[n_out] = scratch[cur]
                    p = run_first + cur
                    out_p[n_out] = p
                    # recompute the strand of the k-mer at p (cheap, avoids a second scratch array)
                    f = np.uint64(0)
                    r = np.uint64(0)
                    for q in range(p, p + k):
                        b = np.uint64(seq[q])
                        f = (f << np.uint64(2)) | b
                        r = r | ((np.uint64(3) - b) << np.uint64(2 * (q - p)))
                    out_s[n_out] = 1 if r < f else 0
                    n_out += 1
                    last = cur
            m = 0
        if c >= 4:
            run = 0
            fwd = np.uint64(0)
            rev = np.uint64(0)
        i += 1
    return n_out


# state of a streaming sketch (sketch_stream): the k-mer registers, and the current run of k-mers
ST_RUN, ST_M, ST_CUR, ST_LAST = range(4)


def stream_state(w):
    """A fresh state for sketch_stream: (uint64[2] forward/reverse k-mer registers, int64[4] run
    length / k-mers in the run / current minimum / last emitted (k-mer numbers in the run), and
    the rings of the last w k-mers' hashes and values)."""
    st_i = np.zeros(4, np.int64)
    st_i[ST_CUR] = -1
    st_i[ST_LAST] = -1
    return np.zeros(2, np.uint64), st_i, np.zeros(max(w, 1), np.uint64), np.zeros(max(w, 1), np.int64)


@jit
def sketch_stream(seq, n, gpos0, k, w, st_u, st_i, ring_h, ring_v, out_h, out_v, n_out, final):
    """The minimizers of a sequence fed block by block (the same as sketch_into over the whole).

    seq[:n] continues the sequence given to the earlier calls with this state; gpos0 is the
    position of seq[0] in the output's coordinates; final says the sequence ends after this
    block. Appends from n_out: out_h the hash, out_v (position << 1) | strand; returns the new
    count. At most n + 1 entries are added: size out_* to n_out + n + 1. Memory: the state's
    rings of w k-mers, whatever the length of the sequence. K-mer number j of a run sits in
    ring slot j mod w; the slots are followed as counters, not computed by division."""
    mask = (np.uint64(1) << np.uint64(2 * k)) - np.uint64(1)
    shift = np.uint64(2 * (k - 1))
    fwd = st_u[0]
    rev = st_u[1]
    run = st_i[ST_RUN]
    m = st_i[ST_M]
    cur = st_i[ST_CUR]
    last = st_i[ST_LAST]
    slot = m % w                                  # where k-mer number m goes
    cslot = cur % w if cur >= 0 else 0
    curh = ring_h[cslot]
    for i in range(n + (1 if final else 0)):
        c = seq[i] if i < n else np.uint8(4)
        if c < 4:
            fwd = ((fwd << np.uint64(2)) | np.uint64(c)) & mask
            rev = (rev >> np.uint64(2)) | (np.uint64(3 - c) << shift)
            run += 1
            if run < k:
                continue
            hv = hash64(rev if rev < fwd else fwd, mask)
            ring_h[slot] = hv
            ring_v[slot] = ((gpos0 + i - k + 1) << 1) | (1 if rev < fwd else 0)
            here = slot
            slot += 1
            if slot == w:
                slot = 0
            m += 1
            if m < w:
                continue
            ws = m - w                           # the window of k-mers ws .. m-1 is complete
            if cur < ws:                         # the minimum left the window: find the new one
                cur = ws
                cslot = slot                     # k-mer ws sits where k-mer m will go
                curh = ring_h[cslot]
                t = cslot
                for j in range(ws + 1, m):
                    t += 1
                    if t == w:
                        t = 0
                    if ring_h[t] < curh:
                        cur = j
                        cslot = t
                        curh = ring_h[t]
            elif hv < curh:
                cur = m - 1
                cslot = here
                curh = hv
            if cur != last:
                out_h[n_out] = curh
                out_v[n_out] = ring_v[cslot]
                n_out += 1
                last = cur
            continue
        # an N (or the end): the run of k-mers ends; a run shorter than a window selects its smallest
        if 0 < m < w:
            b = 0
            for t in range(1, m):
                if ring_h[t] < ring_h[b]:
                    b = t
            out_h[n_out] = ring_h[b]
            out_v[n_out] = ring_v[b]
            n_out += 1
        fwd = np.uint64(0)
        rev = np.uint64(0)
        run = 0
        m = 0
        slot = 0
        cur = -1
        last = -1
    st_u[0] = fwd
    st_u[1] = rev
    st_i[ST_RUN] = run
    st_i[ST_M] = m
    st_i[ST_CUR] = cur
    st_i[ST_LAST] = last
    return n_out


def sketch(seq, k, w):
    """Minimizers of a whole uint8 code array: (hashes, pos, strand)."""
    seq = np.ascontiguousarray(seq, dtype=np.uint8)
    n = len(seq)
    cap = max(16, n)
    out_h = np.empty(cap, np.uint64)
    out_p = np.empty(cap, np.int64)
    out_s = np.empty(cap, np.uint8)
    cnt = sketch_into(seq, 0, n, k, w, np.empty(max(n, 1), np.uint64), out_h, out_p, out_s, 0)
    return out_h[:cnt].copy(), out_p[:cnt].copy(), out_s[:cnt].copy()


# ---------------------------------------------------------------- slow twin (plain Python)

def hash64_slow(key, k):
    mask = (1 << (2 * k)) - 1
    key = (~key + (key << 21)) & mask
    key ^= key >> 24
    key = (key + (key << 3) + (key << 8)) & mask
    key ^= key >> 14
    key = (key + (key << 2) + (key << 4)) & mask
    key ^= key >> 28
    key = (key + (key << 31)) & mask
    return key


def sketch_slow(seq, k, w):
    """The definition, written out: every window of w k-mers in every ACGT run, leftmost minimum."""
    seq = [int(c) for c in seq]
    sel = {}
    i = 0
    n = len(seq)
    while i < n:
        if seq[i] >= 4:
            i += 1
            continue
        j = i
        while j < n and seq[j] < 4:
            j += 1
        kmers = []  # (hash, pos, strand)
        for p in range(i, j - k + 1):
            f = 0
            r = 0
            for q in range(k):
                f = f * 4 + seq[p + q]
                r = r * 4 + (3 - seq[p + k - 1 - q])
            kmers.append((hash64_slow(min(f, r), k), p, 1 if r < f else 0))
        if kmers:
            ww = min(w, len(kmers))
            for s in range(len(kmers) - ww + 1):
                window = kmers[s:s + ww]
                best = min(range(ww), key=lambda t: (window[t][0], t))
                h, p, st = window[best]
                sel[p] = (h, st)
        i = j
    ps = sorted(sel)
    return (np.array([sel[p][0] for p in ps], dtype=np.uint64), np.array(ps, dtype=np.int64),
            np.array([sel[p][1] for p in ps], dtype=np.uint8))
