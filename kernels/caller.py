"""Calling one interval from sorted, duplicate-marked reads: the pileup of a window around it, the
candidate alleles, and their genotypes (pileup sites and haplotype windows) as VCF lines.

A window reaches `guard` bases beyond the interval on each side (the longest deletion, the
furthest left-normalisation, the longest read), so a variant near the interval's edge is seen
with all its reads; only the variants whose POS lies in the interval are written. A window too
narrow for a site near its edge is widened and tried again.
"""
import math

import numpy as np

from kernels import vcf as V
from kernels.alleles import HAP_NEAR, apply_alleles, candidates, plan
from kernels.genotype import LN10, genotype_table, hap_scores, posterior_many, snp_likelihoods
from kernels.pileup import MAX_SHIFT, pileup
from kernels.types import F_DUP, F_QCFAIL, F_SECONDARY, F_SUPPL, F_UNMAP

MIN_MQ = 20
MIN_BQ = 13
MAX_DEL = 1000           # pileup ignores longer deletions (cap in pileup.pileup)
THETA_SNP = 1e-3 / 3     # heterozygosity for one particular alternative base (SNPs ~1e-3 per base)
THETA_INDEL = 1.25e-4
MAX_SITE_READS = 250
class Unloaded(Exception):
    """A window needs reads that were not loaded (a block's neighbours were read only near its edges)."""


class Caller:
    """Calls intervals from sorted, duplicate-marked reads. ref: a kernels.reference.RefView (its
    bases are loaded around each window before it is piled up)."""

    def __init__(self, ref, reads, qerr, extent=None):
        self.ref = ref
        self.reads = reads
        self.qerr = qerr
        self.extent = extent         # {tid: (a, b)}: only reads with positions in [a, b) are all there
        self.tid_of = {n: i for i, n in enumerate(ref.names)}
        f = reads.flag.astype(np.int64)
        self.usable = ((f & (F_UNMAP | F_SECONDARY | F_SUPPL | F_QCFAIL | F_DUP)) == 0) & (reads.mapq >= MIN_MQ)
        self.span = int((reads.uend - reads.ustart)[self.usable].max()) if self.usable.any() else 1
        # reads are sorted with the placed ones first, by contig: each contig's slice of them
        placed = int((reads.tid >= 0).sum())
        tids = reads.tid[:placed]
        self.tslice = {t: (int(np.searchsorted(tids, t, "left")), int(np.searchsorted(tids, t, "right")))
                       for t in range(len(ref.names))}

    def interval(self, iv):
        """VCF lines (and counts) for the variants whose POS lies in iv."""
        t = self.tid_of[iv.chrom]
        lo_c, hi_c = int(self.ref.offsets[t]), int(self.ref.offsets[t + 1])
        contig = self.ref.seq[lo_c:hi_c]
        clen = hi_c - lo_c
        guard = MAX_DEL + MAX_SHIFT + 2 * HAP_NEAR + self.span
        flank = 2 * guard
        while True:
            ws = max(0, iv.start - flank)
            we = min(clen, iv.end + flank)
            if self.extent is not None:
                a, b = self.extent.get(t, (0, 0))
                if (ws > 0 and ws - self.span < a) or (we < clen and we > b):
                    raise Unloaded(f"{iv}: a window {iv.chrom}:{ws + 1}-{we} reaches beyond the loaded reads")
            # the bases the window's reads, indels and haplotypes can touch
            pad = 2 * self.span + MAX_DEL + MAX_SHIFT + 200
            self.ref.load(t, ws - pad, we + pad)
            res = self._window(iv, t, contig, ws, we, guard)
            if res is not None:
                return res
            flank *= 2

    def _use(self, t, ws, we):
        a, b = self.tslice.get(t, (0, 0))
        pos = self.reads.pos[a:b]
        i0 = a + int(np.searchsorted(pos, ws - self.span, "left"))
        i1 = a + int(np.searchsorted(pos, we, "left"))
        idx = np.arange(i0, i1)
        return idx[self.usable[i0:i1]]

    def _window(self, iv, t, contig, ws, we, guard):
        """Lines for iv from the window [ws, we), or None when a site near its edge needs a wider one."""
        reads = self.reads
        use = self._use(t, ws, we)
        W = we - ws
        cnt = np.zeros((W, 4), np.int32)
        depth = np.zeros(W, np.int32)
        cap = 4 * len(use) + 1024
        while True:
            ev = (np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.uint64),
                  np.empty(16 * cap, np.uint8))
            cnt[:] = 0
            depth[:] = 0
            ne = pileup(reads.raw, reads.roff, use, reads.pos, contig, ws, we, MIN_BQ, cnt, depth, *ev)
            if ne >= 0:
                break
            cap *= 4
        piles, windows = plan(candidates(contig, ws, we, cnt, depth, ev, ne))
        # whatever can write a record in iv must be complete: away from the window's edges (or at the contig's)
        piles = [x for x in piles if iv.start <= x.pos < iv.end]
        windows = [w for w in windows if w.lo < iv.end and w.hi > iv.start]
        for lo, hi in [(x.pos, x.pos + 1) for x in piles] + [(w.lo, w.hi) for w in windows]:
            if (lo - HAP_NEAR < ws + guard and ws > 0) or (hi + HAP_NEAR > we - guard and we < len(contig)):
                return None
        out = []
        if piles:
            out += self._genotype_pileup(iv.chrom, piles, use, ws, we)
        if windows:
            out += self._genotype_windows(iv.chrom, windows, use, contig)
        out = sorted((o for o in out if iv.start <= o[0] < iv.end), key=lambda o: (o[0], o[1]))
        return [line for _, line in out], len(piles) + len(windows)

    def _genotype_pileup(self, chrom, sites, use, ws, we):
        reads = self.reads
        ns = len(sites)
        site_at = np.full(we - ws, -1, np.int32)
        alleles = np.zeros((ns, 3), np.uint8)
        nall = np.zeros(ns, np.int64)
        for i, x in enumerate(sites):
            site_at[x.pos - ws] = i
            al = [x.ref] + x.alts
            alleles[i, :len(al)] = al
            nall[i] = len(al)
        gl = np.zeros((ns, 6))
        ad = np.zeros((ns, 3), np.int64)
        dp = np.zeros(ns, np.int64)
        snp_likelihoods(reads.raw, reads.roff, use, reads.pos, reads.mapq, reads.flag, ws, we, site_at, alleles, nall, MIN_BQ,
                        self.qerr, gl, ad, dp)
        out = []
        for k in (2, 3):
            sel = np.flatnonzero(nall == k)
            if not len(sel):
                continue
            best, qual, gq, pl = posterior_many(gl[sel], k, THETA_SNP)
            table = genotype_table(k)
            for n in np.flatnonzero(best > 0):           # genotype 0 is 0/0: no record
                i = sel[n]
                x = sites[i]
                out.append(site_record(chrom, x.pos, [x.ref], [[a] for a in x.alts], table[best[n]], float(qual[n]),
                                       int(gq[n]), [int(v) for v in pl[n]], ad[i], int(dp[i]), False))
        return out

    def _genotype_windows(self, chrom, windows, use, contig):
        reads = self.reads
        ctx = self.span + 10
        seqs, hoff, hstart, h0, nh = [], [0], [], [], []
        for w in windows:
            a = max(0, w.lo - ctx)
            b = min(len(contig), w.hi + ctx)
            h0.append(len(hoff) - 1)
            nh.append(len(w.haps))
            hstart.append(a)
            for hap in w.haps:
                hs = apply_alleles(contig, a, b, [w.alleles[i] for i in hap])
                seqs.append(hs)
                hoff.append(hoff[-1] + len(hs))
        nw = len(windows)
        nreads = np.zeros(nw, np.int64)
        sc_off = np.zeros(nw + 1, np.int64)
        scores = np.empty(MAX_SITE_READS * int(np.sum(nh)))
        hap_scores(reads.raw, reads.roff, use, reads.pos, reads.ustart, reads.uend, reads.mapq, reads.flag, self.qerr,
                   np.array([w.lo for w in windows], np.int64), np.array([w.hi for w in windows], np.int64),
                   np.concatenate(seqs), np.array(hoff, np.int64), np.array(hstart, np.int64),
                   np.array(h0, np.int64), np.array(nh, np.int64), 8, MAX_SITE_READS, nreads, scores, sc_off)
        out = []
        for i, w in enumerate(windows):
            S = scores[sc_off[i]:sc_off[i + 1]].reshape(int(nreads[i]), nh[i])
            out += genotype_window(chrom, w, S, contig)
        return out


def genotype_window(chrom, w, S, contig):
    """Records of a window from its read x haplotype log-probabilities S."""
    H = len(w.haps)
    I, J = np.array([(i, j) for j in range(H) for i in range(j + 1)]).T
    gl = (np.logaddexp(S[:, I], S[:, J]) - math.log(2.0)).sum(0) if len(S) else np.zeros(len(I))
    in_hap = np.array([[k in h for h in w.haps] for k in range(len(w.alleles))], np.int64)
    dose = in_hap[:, I] + in_hap[:, J]                                 # alleles x pairs
    theta = np.array([THETA_INDEL if a.indel else THETA_SNP for a in w.alleles])[:, None]
    prior = np.where(dose == 1, np.log(theta), np.where(dose == 2, np.log(theta / 2), 0.0)).sum(0)
    post = gl + prior
    post -= np.logaddexp.reduce(post)
    best = int(np.argmax(post))
    # reads' preferred haplotype (by a factor of 10), for AD
    if len(S) and H > 1:
        srt = np.sort(S, 1)
        clear = srt[:, -1] - srt[:, -2] >= LN10
        pref = np.where(clear, np.argmax(S, 1), -1)
    else:
        pref = np.full(len(S), -1)
    # sites: the window's alleles grouped by overlapping spans
    sites = []
    for k in range(len(w.alleles)):
        a = w.alleles[k]
        if sites and a.pos0 < sites[-1][1]:
            sites[-1][1] = max(sites[-1][1], a.end)
            sites[-1][2].append(k)
        else:
            sites.append([a.pos0, a.end, [k]])
    out = []
    for lo, hi, ks in sites:
        # the allele (1-based within the site, 0 = reference) each haplotype carries here
        carry = np.array([next((1 + n for n, k in enumerate(ks) if k in h), 0) for h in w.haps])
        ci, cj = np.minimum(carry[I], carry[J]), np.maximum(carry[I], carry[J])
        gt = (int(ci[best]), int(cj[best]))
        if gt == (0, 0):
            continue
        nal = 1 + len(ks)
        table = genotype_table(nal)
        code = np.array([table.index((int(x), int(y))) for x, y in zip(ci, cj)])
        marg = np.full(len(table), -np.inf)
        gmax = np.full(len(table), -np.inf)
        for g in range(len(table)):
            sel = code == g
            if sel.any():
                marg[g] = np.logaddexp.reduce(post[sel])
                gmax[g] = gl[sel].max()
        qual = min(9999.0, -10.0 * marg[0] / LN10) if np.isfinite(marg[0]) else 9999.0
        g_best = table.index(gt)
        rest = np.delete(marg, g_best)
        rest = rest[np.isfinite(rest)]
        gq = min(99, max(0, int(round(-10.0 * np.logaddexp.reduce(rest) / LN10)))) if len(rest) else 99
        finite = np.isfinite(gmax)
        pl = np.where(finite, np.rint(-10.0 * (gmax - gmax[finite].max()) / LN10), 9999).astype(np.int64)
        ad = np.zeros(nal, np.int64)
        for h in pref[pref >= 0]:
            ad[carry[h]] += 1
        ref = [int(x) for x in contig[lo:hi]]
        alts = [[int(x) for x in contig[lo:w.alleles[k].pos0]] + list(w.alleles[k].alt) +
                [int(x) for x in contig[w.alleles[k].end:hi]] for k in ks]
        out.append(site_record(chrom, lo, ref, alts, gt, qual, gq, [int(x) for x in pl], ad, len(S), True))
    return out


def site_record(chrom, pos0, ref, alts, gt, qual, gq, pl, ad, dp, hap):
    """(POS, VCF line) of a site, with the alleles its genotype does not use dropped and the record
    trimmed to its minimal form."""
    k = 1 + len(alts)
    used = sorted({x for x in gt if x > 0})
    keep = [0] + used
    index = {a: n for n, a in enumerate(keep)}
    table = genotype_table(k)
    sub = [pl[table.index((keep[ii], keep[jj]))] for jj in range(len(keep)) for ii in range(jj + 1)]
    low = min(sub)
    p0, r, a = V.trim(pos0, ref, [alts[x - 1] for x in used])
    return p0, V.record(chrom, p0, r, a, qual, (index[gt[0]], index[gt[1]]), gq, dp, [int(ad[x]) for x in keep],
                        [v - low for v in sub], hap)


