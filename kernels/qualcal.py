"""Base quality calibration: the error rate of each reported quality at each sequencing cycle.

Read simulators and sequencers alike report qualities that are not quite the error rates (on the
shipped data a reported Q40 base is wrong about as often as a Q26 one, and more so late in the
read), and a caller that believes them calls errors as variants. The error rate of every
(reported quality, cycle bin) is counted on the sample itself: aligned bases of primary reads
with MAPQ >= 30 against the reference, on the reads whose name hash is 0 modulo SHARE (a fixed
eighth, so the counts are the same whoever counts them). The aligner counts them on the records
it writes (`kernels.align --qual-counts FILE`), the pipeline adds up its chunks' counts, and
`kernels.call --qual-counts FILE` uses them; without that option the caller counts its own
input the same way, so a sample called whole or region by region gets one table.
Counts file (JSON): {"format": "genefarm-quality-counts", "version": 1, "cycle_bin": 10,
"bases": [[...] * NCYC] * NQ, "mismatches": [[...] * NCYC] * NQ}.
"""
import json
import os

import numpy as np

from kernels._numba import jit
from kernels.errors import InputError
from kernels.bamrec import base_at, i32 as _i32, record_layout

NQ = 94                 # qualities 0..93 (FASTQ '!'..'~')
CYCLE_BIN = 10          # sequencing cycles measured together
NCYC = 32               # cycle bins (cycles from 310 on share the last)
SHARE = 8               # reads counted: name hash % SHARE == 0
MIN_MAPQ = 30
FORMAT = "genefarm-quality-counts"


@jit
def count_errors(raw, roff, idx, pos, flag, ref_seq, ref_off, tid, tot, mm):
    """For the BAM records idx (starting at raw[roff[i]]): per reported base quality and cycle bin,
    aligned bases (tot) and those differing from the reference (mm); N on either side skipped."""
    for u in range(idx.shape[0]):
        r = idx[u]
        rev = (flag[r] & 16) != 0
        c0, ncig, s0, q0, lseq = record_layout(raw, roff[r])
        rp = ref_off[tid[r]] + pos[r]
        qi = 0
        for k in range(ncig):
            word = _i32(raw, c0 + 4 * k)
            op = word & 15
            ln = word >> 4
            if op == 0 or op == 7 or op == 8:
                for t in range(ln):
                    c = ref_seq[rp + t]
                    b = base_at(raw, s0, qi + t)
                    q = raw[q0 + qi + t]
                    if c < 4 and b < 4 and q < NQ:
                        cyc = (lseq - 1 - qi - t) if rev else qi + t
                        cb = cyc // CYCLE_BIN
                        if cb >= NCYC:
                            cb = NCYC - 1
                        tot[q, cb] += 1
                        if b != c:
                            mm[q, cb] += 1
                rp += ln
                qi += ln
            elif op == 1 or op == 4:
                qi += ln
            elif op == 2 or op == 3:
                rp += ln


def counted(flag, mapq, namehash):
    """Which records the calibration counts (see the module doc)."""
    f = flag.astype(np.int64)
    return ((f & (4 | 256 | 512 | 2048)) == 0) & (mapq >= MIN_MAPQ) & ((namehash % np.uint64(SHARE)) == 0)


def new_counts():
    return np.zeros((NQ, NCYC), np.int64), np.zeros((NQ, NCYC), np.int64)


def table(tot, mm, max_bq):
    """Error rate per (reported quality, cycle bin) from counts: a bin is pooled with neighbouring
    cycle bins, then qualities, until it holds >= 2,000 bases; a reported quality is trusted up to
    max_bq at most (a measured rate includes the sample's true variants, so it errs on the careful
    side); within a cycle bin the rate never increases with quality. Unseen cells keep the
    nominal rate of their quality. The pooled sums come from summed-area tables: every rank and
    every region's task builds this table, and summing numpy slices for each cell took 30-42 ms
    (table_slow, its twin in tests; counts are whole numbers, so both sums are exact)."""
    st, sm = _summed_area(tot), _summed_area(mm)
    return _pooled(tot, max_bq, lambda *box: _box(st, *box), lambda *box: _box(sm, *box))


def table_slow(tot, mm, max_bq):
    """table() summing the numpy slice of each pooled box."""
    tot, mm = np.asarray(tot, np.float64), np.asarray(mm, np.float64)
    return _pooled(tot, max_bq, lambda a, b, c, d: tot[a:b, c:d].sum(), lambda a, b, c, d: mm[a:b, c:d].sum())


def _pooled(tot, max_bq, bases, errors):
    """table()'s rule, given the sums of bases and of mismatches over a box (qlo, qhi, clo, chi)."""
    nominal = np.maximum(10.0 ** (-np.arange(NQ) / 10.0), 10.0 ** (-max_bq / 10.0))
    err = np.repeat(nominal[:, None], NCYC, 1)
    seen = np.asarray(tot).sum(1)
    for q in range(NQ):
        if seen[q] == 0:
            continue
        row = err[q]
        for c in range(NCYC):
            qlo, qhi, clo, chi = q, q + 1, c, c + 1
            while bases(qlo, qhi, clo, chi) < 2000:
                if clo > 0 or chi < NCYC:
                    clo, chi = max(0, clo - 1), min(NCYC, chi + 1)
                elif qlo > 0 or qhi < NQ:
                    qlo, qhi = max(0, qlo - 1), min(NQ, qhi + 1)
                else:
                    break
            measured = (errors(qlo, qhi, clo, chi) + 1.0) / (bases(qlo, qhi, clo, chi) + 2.0)
            row[c] = max(nominal[q], measured)
    for q in range(NQ - 2, -1, -1):
        err[q] = np.maximum(err[q], err[q + 1])
    return np.minimum(err, 0.75)


def _summed_area(a):
    """s[i][j] = a[:i, :j].sum(), as nested lists of floats (cheap to index one by one)."""
    a = np.asarray(a, np.float64)
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    s[1:, 1:] = a.cumsum(0).cumsum(1)
    return s.tolist()


def _box(s, qlo, qhi, clo, chi):
    return s[qhi][chi] - s[qlo][chi] - s[qhi][clo] + s[qlo][clo]


def write_counts(path, tot, mm):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"format": FORMAT, "version": 1, "cycle_bin": CYCLE_BIN, "bases": np.asarray(tot).tolist(),
                   "mismatches": np.asarray(mm).tolist()}, f)
    os.replace(tmp, path)


def read_counts(paths):
    """Sum of the counts in one or more counts files (the chunks of a sample)."""
    tot, mm = new_counts()
    for p in paths:
        try:
            with open(p) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise InputError(f"{p}: no such quality counts file") from None
        except (OSError, ValueError) as e:
            raise InputError(f"{p}: not a quality counts file ({e})") from None
        if d.get("format") != FORMAT or d.get("cycle_bin") != CYCLE_BIN:
            raise InputError(f"{p}: not a genefarm quality counts file of this version (from kernels.align --qual-counts)")
        t, m = np.array(d["bases"], np.int64), np.array(d["mismatches"], np.int64)
        if t.shape != tot.shape or m.shape != mm.shape:
            raise InputError(f"{p}: quality counts of another shape {t.shape}; expected {tot.shape}")
        tot += t
        mm += m
    return tot, mm
