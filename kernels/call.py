"""Variant calling: sort, mark duplicates, pile up and genotype SNPs and indels, per genomic region.

    python -m kernels.call REF.fa IN.bam [IN2.bam ...] -o OUT.vcf.gz [--region CHR:START-END | --regions N]
                           [--bam-out OUT.bam] [-t THREADS] [--json]
    python -m kernels.call REF.fa --parts PREFIX --regions-bed BED -o OUT.vcf.gz [--neighbour-flank BASES]
    mpiexec -n K python -m kernels.call ...      (ranks take regions; with --parts, blocks of them)

Input: the aligner's BAM (unsorted) or its part files, or any BAM. Records are put in one
canonical order (markdup.sort_order) and duplicates marked once over all of them, then every
region is called in tiles. A tile reads a flank of its neighbours, so that a variant near its
edge is called from the same reads as anywhere else; a variant is written by the tile holding
its POS. The result does not depend on the regions or tiles (tested record for record).

Per tile:
1. pileup (pileup.py) of the usable reads: not duplicates, mapped, primary, MAPQ >= MIN_MQ;
2. candidate alleles: a base other than the reference on >= MIN_ALT reads and >= MIN_ALT_FRAC of
   the depth; an indel (left-normalised) on as many; nothing where the reference is N;
3. alleles closer than HAP_NEAR form a component; a component with an indel is a window whose
   alleles are genotyped together: every compatible set of them is a haplotype, the reads are
   realigned to each (genotype.hap_scores), a pair of haplotypes is the diploid genotype, and a
   site's genotype is the marginal over the pairs. The SNPs of other components are genotyped
   from the pileup (genotype.snp_likelihoods);
4. posterior with a heterozygosity prior, QUAL, GQ, PL; FILTER PASS at QUAL >= 10, else LowQual;
   alleles the genotype does not use are dropped and the record trimmed to its minimal form.
"""
import argparse
import concurrent.futures
import json
import math
import os
import shlex
import sys
import time

from dataclasses import dataclass

import numpy as np

from kernels import __version__
from kernels import vcf as V
from kernels._numba import note_compile, set_threads
from kernels.bamread import concat, header_of, place, read_bam, read_bams
from kernels.errors import InputError, run_cli
from kernels.fasta import read_fasta
from kernels import qualcal
from kernels.genotype import LN10, genotype_table, hap_scores, posterior_many, snp_likelihoods
from kernels.markdup import (F_DUP, F_QCFAIL, F_SECONDARY, F_SUPPL, F_UNMAP, concat_sorted_bams, libraries,
                             mark_duplicates, sort_order, with_dup_flags, write_sorted_bam, write_sorted_records)
from kernels.pileup import MAX_SHIFT, pileup
from kernels.regions import Interval, parse_region, part_paths, read_regions, split_genome

MIN_MQ = 20
MIN_BQ = 13
MAX_BQ = 40              # reported base qualities are trusted up to this at most (see --max-bq)
MIN_ALT = 2
MIN_ALT_FRAC = 0.05
HAP_NEAR = 10
MAX_DEL = 1000           # pileup ignores longer deletions (cap in pileup.pileup)
THETA_SNP = 1e-3 / 3     # heterozygosity for one particular alternative base (SNPs ~1e-3 per base)
THETA_INDEL = 1.25e-4
MAX_SITE_READS = 250
TILE = 1_000_000
NEIGHBOUR_FLANK = 100_000    # --parts: bases of a neighbouring region's reads a block of regions loads


# ---------------------------------------------------------------- inputs

def check_headers(paths):
    """The inputs' headers: they must share one reference dictionary. Returns a merged header
    (the first one's, with the read groups of all)."""
    hdrs = []
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"{p}: no such BAM file")
        if not os.access(p, os.R_OK):
            raise InputError(f"{p}: not readable (permissions)")
        hdrs.append((p, header_of(p)))
    first_p, first = hdrs[0]
    sq = [(s["SN"], s["LN"]) for s in first.get("SQ", [])]
    if not sq:
        raise InputError(f"{first_p}: the BAM header has no @SQ lines (no reference dictionary)")
    rgs = {g["ID"]: g for g in first.get("RG", [])}
    for p, h in hdrs[1:]:
        if [(s["SN"], s["LN"]) for s in h.get("SQ", [])] != sq:
            raise InputError(f"{p}: its @SQ lines differ from those of {first_p}; the inputs must come "
                             f"from alignments to one reference")
        for g in h.get("RG", []):
            rgs.setdefault(g["ID"], g)
    merged = dict(first)
    if rgs:
        merged["RG"] = list(rgs.values())
    return merged


def check_reference(hdr, ref, bam_path, ref_path):
    """InputError unless the BAM's @SQ names and lengths are the reference's."""
    mine = {n: int(ln) for n, ln in zip(ref.names, ref.lengths)}
    for s in hdr["SQ"]:
        if s["SN"] not in mine:
            raise InputError(f"{bam_path}: contig {s['SN']!r} of the BAM header is not in {ref_path}; "
                             f"the reads were aligned to another reference")
        if mine[s["SN"]] != int(s["LN"]):
            raise InputError(f"{bam_path}: contig {s['SN']!r} has length {s['LN']} in the BAM header but "
                             f"{mine[s['SN']]} in {ref_path}; the reads were aligned to another reference")
    if [s["SN"] for s in hdr["SQ"]] != list(ref.names):
        raise InputError(f"{bam_path}: the BAM's contigs are not those of {ref_path} in the same order "
                         f"(BAM: {', '.join(s['SN'] for s in hdr['SQ'][:4])}...; reference: "
                         f"{', '.join(ref.names[:4])}...)")


def check_sorted(path, hdr, reads):
    """A BAM whose header says SO:coordinate must be sorted (so callers may trust it)."""
    if hdr.get("HD", {}).get("SO") != "coordinate":
        return
    tkey = np.where(reads.tid < 0, np.iinfo(np.int64).max, reads.tid.astype(np.int64))
    bad = np.flatnonzero((tkey[1:] < tkey[:-1]) | ((tkey[1:] == tkey[:-1]) & (reads.pos[1:] < reads.pos[:-1])))
    if len(bad):
        i = int(bad[0]) + 1
        raise InputError(f"{path}: the header says SO:coordinate but record {i + 1} (position {reads.pos[i] + 1}) "
                         f"comes after position {reads.pos[i - 1] + 1}: unsorted input where sorted is required; "
                         f"sort it with `samtools sort` or drop the SO tag")


def sample_name(hdr, first_path):
    sms = sorted({g["SM"] for g in hdr.get("RG", []) if "SM" in g})
    if len(sms) > 1:
        raise InputError(f"the inputs hold reads of several samples ({', '.join(sms)}); call each sample on its own")
    if sms:
        return sms[0]
    return os.path.basename(first_path).split(".")[0] or "SAMPLE"


def sorted_header_bytes(hdr, argv):
    """BAM header for sorted output: SO:coordinate and a @PG line for this command."""
    import pysam
    from kernels.bam import header_bytes
    h = dict(hdr)
    h["HD"] = dict(h.get("HD", {"VN": "1.6"}), SO="coordinate")
    h["HD"].pop("GO", None)
    cl = " ".join(shlex.quote(a) for a in (argv or sys.argv))
    pgs = list(h.get("PG", []))
    ids = {p["ID"] for p in pgs}
    pid = "genefarm-call"
    while pid in ids:
        pid += "+"
    pgs.append({"ID": pid, "PN": "genefarm-call", "VN": __version__, "CL": cl})
    h["PG"] = pgs
    text = str(pysam.AlignmentHeader.from_dict(h))
    return header_bytes(text, [s["SN"] for s in h["SQ"]], [s["LN"] for s in h["SQ"]])


# ---------------------------------------------------------------- calling one interval

class Unloaded(Exception):
    """A window needs reads that were not loaded (a block's neighbours were read only near its edges)."""


class Caller:
    """Calls intervals from sorted, duplicate-marked reads."""

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


@dataclass
class Allele:
    """A candidate: reference bases ref at pos0 (0-based) replaced by alt; support: reads showing it."""
    pos0: int
    ref: tuple
    alt: tuple
    indel: bool
    support: int

    @property
    def end(self):
        return self.pos0 + len(self.ref)


@dataclass
class PileSite:
    """An isolated SNP site: reference code, alternative codes (best supported first, at most 2)."""
    pos: int
    ref: int
    alts: list


@dataclass
class Window:
    """Alleles near an indel, genotyped together: [lo, hi) spans them; haps lists the compatible
    sets of allele indices (no two overlapping), the empty set (the reference) first."""
    lo: int
    hi: int
    alleles: list
    haps: list


def candidates(contig, ws, we, cnt, depth, ev, ne):
    """Candidate Alleles of a window: bases and left-normalised indels seen on >= MIN_ALT reads
    and >= MIN_ALT_FRAC of the depth; none touching an N of the reference."""
    alleles = []
    refw = contig[ws:we]
    thr = np.maximum(MIN_ALT, np.ceil(MIN_ALT_FRAC * depth)).astype(np.int32)
    for b in range(4):
        for p in np.flatnonzero((refw < 4) & (refw != b) & (cnt[:, b] >= thr)):
            alleles.append(Allele(ws + int(p), (int(refw[p]),), (b,), False, int(cnt[p, b])))
    if ne <= 0:
        return alleles
    anchor, ln, soff, h, seqbuf = ev[0][:ne], ev[1][:ne], ev[2][:ne], ev[3][:ne], ev[4]
    order = np.lexsort((h, ln, anchor))
    a_s, l_s, h_s = anchor[order], ln[order], h[order]
    new = np.ones(ne, np.bool_)
    new[1:] = (a_s[1:] != a_s[:-1]) | (l_s[1:] != l_s[:-1]) | (h_s[1:] != h_s[:-1])
    starts = np.flatnonzero(new)
    for st, c in zip(starts, np.diff(np.append(starts, ne))):
        a, L = int(a_s[st]), int(l_s[st])
        if a < ws or a >= we or contig[a] >= 4 or c < max(MIN_ALT, MIN_ALT_FRAC * depth[a - ws]):
            continue
        if L < 0:
            span = contig[a:a - L + 1]
            if len(span) != 1 - L or (span >= 4).any():
                continue                    # a deletion running into N or off the contig
            alleles.append(Allele(a, tuple(int(x) for x in span), (int(contig[a]),), True, int(c)))
        else:
            i = order[st]
            ins = seqbuf[soff[i]:soff[i] + L]
            alleles.append(Allele(a, (int(contig[a]),), (int(contig[a]),) + tuple(int(x) for x in ins), True, int(c)))
    return alleles


MAX_WIN_ALLELES = 5


def plan(alleles):
    """Candidate alleles -> (pileup SNP sites, haplotype windows). Alleles closer than HAP_NEAR
    form one component; a component with an indel is a window (its MAX_WIN_ALLELES best supported
    alleles), the SNPs of the others are pileup sites."""
    alleles = sorted(alleles, key=lambda a: (a.pos0, len(a.ref), a.alt))
    comps = []
    for a in alleles:
        if comps and a.pos0 < comps[-1][0] + HAP_NEAR:
            comps[-1][0] = max(comps[-1][0], a.end)
            comps[-1][1].append(a)
        else:
            comps.append([a.end, [a]])
    piles, windows = [], []
    for _, members in comps:
        if any(a.indel for a in members):
            best = sorted(members, key=lambda a: (-a.support, a.pos0, len(a.ref), a.alt))[:MAX_WIN_ALLELES]
            best.sort(key=lambda a: (a.pos0, len(a.ref), a.alt))
            haps = []
            for mask in range(1 << len(best)):
                chosen = [i for i in range(len(best)) if mask >> i & 1]
                if all(best[x].end <= best[y].pos0 or best[y].end <= best[x].pos0
                       for n, x in enumerate(chosen) for y in chosen[n + 1:]):
                    haps.append(tuple(chosen))
            windows.append(Window(min(a.pos0 for a in best), max(a.end for a in best), best, haps))
        else:
            by_pos = {}
            for a in members:
                by_pos.setdefault(a.pos0, []).append(a)
            for p, al in by_pos.items():
                al.sort(key=lambda a: (-a.support, a.alt))
                piles.append(PileSite(p, al[0].ref[0], [a.alt[0] for a in al[:2]]))
    return piles, windows


def apply_alleles(contig, a, b, alleles):
    """contig[a:b] with the (non-overlapping) alleles in place, as uint8 codes."""
    parts = []
    at = a
    for al in sorted(alleles, key=lambda x: x.pos0):
        parts.append(contig[at:al.pos0])
        parts.append(np.array(al.alt, np.uint8))
        at = al.end
    parts.append(contig[at:b])
    return np.concatenate(parts)


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


# ---------------------------------------------------------------- driver and CLI

def _mpi():
    launched = any(v in os.environ for v in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_SIZE"))
    if not launched:
        return None, 0, 1
    from mpi4py import MPI
    return MPI.COMM_WORLD, MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def tiles(region):
    """A region's intervals cut into tiles of at most TILE bases (the unit of work of a thread)."""
    out = []
    for iv in region:
        for a in range(iv.start, iv.end, TILE):
            out.append(Interval(iv.chrom, a, min(iv.end, a + TILE)))
    return out


def load(ref, ref_path, inputs, keep=None):
    """Merged header and the records of the inputs, sorted, duplicates marked (in `flag`), the
    number of duplicates, and the longest unclipped read seen. keep: one per input, None (all its
    records) or an Interval (only the records placed in it)."""
    hdr = check_headers(inputs)
    check_reference(hdr, ref, inputs[0], ref_path)
    ids, libs = libraries(hdr)
    tid_of = {n: i for i, n in enumerate(ref.names)}
    keep = keep or [None] * len(inputs)
    reach = 0

    def checked(p, r, h):
        nonlocal reach
        check_sorted(p, h, r)
        if r.n:
            reach = max(reach, int((r.uend - r.ustart).max()))
        return r
    # the neighbours' reads near the block first (few), then every whole file inflated into one
    # buffer with room for them at its end: joining them copies no record bytes
    near = []
    for p, k in zip(inputs, keep):
        if k is not None:
            r = checked(p, *read_bam(p, ids))
            near.append(r.take(np.flatnonzero((r.tid == tid_of[k.chrom]) & (r.pos >= k.start) &
                                              (r.pos < k.end))).compact())
    whole = [p for p, k in zip(inputs, keep) if k is None]
    got, buf, at = read_bams(whole, ids, spare=sum(len(r.raw) for r in near))
    parts = [checked(p, r, h) for p, (r, h) in zip(whole, got)]
    for r in near:
        parts.append(place(r, buf, at))
        at += len(r.raw)
    reads = concat(parts)
    reads = reads.take(sort_order(reads))
    dup = mark_duplicates(reads, libs)
    reads.flag = with_dup_flags(reads.flag, dup)
    return hdr, reads, int(dup.sum()), reach


def balanced_blocks(weights, k):
    """len(weights) items cut into k contiguous blocks [lo, hi), block j ending where the running
    total of the weights comes nearest to (j + 1)/k of the whole; no block is empty while there
    are as many items as blocks."""
    n = len(weights)
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(weights, np.float64))])
    if cum[-1] <= 0:
        cum = np.arange(n + 1, dtype=np.float64)
    cuts = [0]
    for j in range(1, k):
        lo = min(n, cuts[-1] + (1 if n >= k else 0))
        hi = max(lo, n - (k - j) if n >= k else n)
        c = lo + int(np.argmin(np.abs(cum[lo:hi + 1] - cum[-1] * j / k)))
        cuts.append(c)
    cuts.append(n)
    return list(zip(cuts[:-1], cuts[1:]))


def block_inputs(reglist, paths, lo, hi, flank=NEIGHBOUR_FLANK):
    """What a rank taking regions [lo, hi) of the parts reads: (paths, keep) for load(), and
    {contig: (a, b)}, the loaded span of each contig the block touches. The neighbouring region on
    each side (in the same contig) is read for its reads within `flank` bases of the block."""
    if lo == hi:
        return [], [], {}
    inputs, keep = list(paths[lo:hi]), [None] * (hi - lo)
    span = {}
    for c, a, b in reglist[lo:hi]:
        s = span.setdefault(c, [a, b])
        s[0], s[1] = min(s[0], a), max(s[1], b)
    c0, a0, _ = reglist[lo]
    if lo > 0 and reglist[lo - 1][0] == c0:
        pa = max(reglist[lo - 1][1], a0 - flank)
        inputs.append(paths[lo - 1])
        keep.append(Interval(c0, pa, a0))
        span[c0][0] = pa
    c1, _, b1 = reglist[hi - 1]
    if hi < len(reglist) and reglist[hi][0] == c1:
        pb = min(reglist[hi][2], b1 + flank)
        inputs.append(paths[hi])
        keep.append(Interval(c1, b1, pb))
        span[c1][1] = pb
    return inputs, keep, span


def trusted_extent(span, lengths, tid_of, reach):
    """{tid: (a, b)}: positions whose reads (and their duplicate marks) are all loaded. Within
    2 x the longest read of a cut in the middle of a contig, a duplicate's copy could lie beyond."""
    ext = {}
    for c, (a, b) in span.items():
        ext[tid_of[c]] = (a if a == 0 else a + 2 * reach, b if b == lengths[c] else b - 2 * reach)
    return ext


def run(ref_path, inputs, out, region=None, nregions=None, bam_out=None, threads=1, argv=None, max_bq=MAX_BQ,
        qual_counts=None, parts_prefix=None, regions_bed=None, flank=NEIGHBOUR_FLANK):
    """Call variants; rank 0 writes out (bgzipped VCF + .tbi) and returns a summary dict.

    Input is either `inputs` (BAM files; with K ranks every rank reads all of them and takes every
    K-th region) or, with parts_prefix and regions_bed, the aligner's part files: a rank then takes
    a contiguous block of the regions (blocks balanced by the parts' sizes) and reads only their
    parts, and of the parts beyond its block's ends the reads near them (block_inputs), so K ranks
    share the reading too."""
    comm, rank, size = _mpi()
    t0 = time.perf_counter()
    for o in (out, bam_out):
        if o and not os.path.isdir(os.path.dirname(os.path.abspath(o))):
            raise InputError(f"{o}: its directory does not exist")
    if not out.endswith(".gz"):
        raise InputError(f"-o {out}: the VCF is bgzipped and indexed: name it .vcf.gz")
    ref = read_fasta(ref_path)
    lengths = dict(zip(ref.names, (int(x) for x in ref.lengths)))
    if parts_prefix:
        _, _, reglist = read_regions(regions_bed, ref.names, ref.lengths)
        regions = [[Interval(c, a, b)] for c, a, b in reglist]
        paths = part_paths(parts_prefix, len(regions))
        lo, hi = balanced_blocks([_size(p) for p in paths[:-1]], size)[rank]
        mine = list(range(lo, hi))
        inputs, keep, span = block_inputs(reglist, paths, lo, hi, flank)
        if bam_out and rank == size - 1:
            inputs, keep = inputs + [paths[-1]], keep + [None]     # the unmapped pairs go at the BAM's end
        if not inputs:                                             # more ranks than regions
            inputs, keep = [paths[0]], [Interval(reglist[0][0], 0, 0)]
    else:
        if region:
            regions = [[parse_region(region, lengths)]]
        else:
            regions = split_genome(ref.names, [lengths[n] for n in ref.names], nregions or 1)
        mine = [i for i in range(len(regions)) if i % size == rank]
        keep, span = None, None
    hdr, reads, ndup, reach = load(ref, ref_path, inputs, keep)
    t1 = time.perf_counter()
    # quality counts: given, or of this rank's own regions summed over the ranks (parts), or of all
    if qual_counts:
        tot, mm = qualcal.read_counts(qual_counts)
    else:
        own = None
        if parts_prefix:
            own = _in_regions(reads, ref, [regions[i] for i in mine])
        tot, mm = count_qualities(ref, reads, own)
        if parts_prefix and size > 1:
            tot, mm = comm.allreduce(tot), comm.allreduce(mm)       # the blocks partition the sample
    qerr = qualcal.table(tot, mm, max_bq)
    work = [(i, t) for i in mine for t in tiles(regions[i])]
    extent = trusted_extent(span, lengths, {n: i for i, n in enumerate(ref.names)}, reach) if span is not None else None
    try:
        done = call_tiles(Caller(ref, reads, qerr, extent), work, threads)
    except Unloaded as e:
        # a window wider than the neighbours' reads loaded: read every part of the block's contigs
        print(f"kernels.call: {e}; reading the whole contigs' parts", file=sys.stderr)
        whole = [p for p, (c, _, _) in zip(paths, reglist) if c in span]
        _, reads_all, _, _ = load(ref, ref_path, whole)
        done = call_tiles(Caller(ref, reads_all, qerr), work, threads)
        del reads_all
    lines = [(i, res[0]) for (i, _), res in zip(work, done)]
    nsites = sum(res[1] for res in done)
    nrec = int(reads.n)
    bam_part = None
    if bam_out and size > 1 and parts_prefix:
        # each rank writes the sorted records of its block (the last one the unmapped pairs too)
        bam_part = f"{bam_out}.rank{rank}.tmp"
        write_sorted_records(bam_part, sorted_header_bytes(hdr, argv),
                             reads.take(np.flatnonzero(_bam_records(reads, ref, [regions[i] for i in mine],
                                                                    rank == size - 1))), threads=threads)
    mine_s = [round(t1 - t0, 3), round(time.perf_counter() - t1, 3)]       # this rank's load, call
    per_rank = [mine_s]
    if size > 1:
        gathered = comm.gather((lines, nsites, nrec, ndup, bam_part, mine_s), root=0)
        if rank != 0:
            return None
        lines = sorted((x for g in gathered for x in g[0]), key=lambda x: x[0])
        nsites = sum(g[1] for g in gathered)
        per_rank = [g[5] for g in gathered]
        if parts_prefix:                 # records were read by their block's rank (and its neighbours)
            nrec, ndup = None, None
    t2 = time.perf_counter()
    body = [ln for _, ls in lines for ln in ls]
    cmd = " ".join(shlex.quote(a) for a in (argv or sys.argv))
    V.write(out, V.header(list(lengths.items()), sample_name(hdr, inputs[0]), ref_path, cmd) +
            "".join(ln + "\n" for ln in body))
    if bam_out:
        if size > 1 and parts_prefix:
            concat_sorted_bams(bam_out, [g[4] for g in gathered])
        else:
            write_sorted_bam(bam_out, sorted_header_bytes(hdr, argv),
                             reads.take(np.flatnonzero(_bam_records(reads, ref, regions, _whole(regions, ref)))),
                             threads=threads)
    t3 = time.perf_counter()
    snp = sum(1 for ln in body if _is_snp(ln))
    passed = [ln for ln in body if ln.split("\t", 7)[6] == "PASS"]
    return {"records": nrec, "duplicates": ndup, "candidate_sites": nsites, "variants": len(body),
            "pass": len(passed), "snps_pass": sum(1 for ln in passed if _is_snp(ln)),
            "indels_pass": sum(1 for ln in passed if not _is_snp(ln)), "snps": snp, "indels": len(body) - snp,
            "regions": len(regions), "ranks": size, "threads": threads, "vcf": os.path.abspath(out),
            "bam": os.path.abspath(bam_out) if bam_out else None,
            "seconds": {"load_sort_markdup": round(t1 - t0, 3), "call": round(t2 - t1, 3),
                        "write": round(t3 - t2, 3), "total": round(t3 - t0, 3),
                        "ranks_load_call": per_rank}}


def call_tiles(caller, work, threads):
    """caller.interval of every (region index, tile) of work, on `threads` threads, in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        return list(ex.map(lambda w: caller.interval(w[1]), work))


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0                     # missing: load() says so


def count_qualities(ref, reads, only=None):
    """Base quality calibration counts (kernels.qualcal) over the reads (only those marked in `only`)."""
    tot, mm = qualcal.new_counts()
    sel = qualcal.counted(reads.flag, reads.mapq, reads.namehash)
    if only is not None:
        sel &= only
    qualcal.count_errors(reads.raw, reads.roff, np.flatnonzero(sel), reads.pos, reads.flag, ref.seq, ref.offsets,
                         reads.tid, tot, mm)
    return tot, mm


def _whole(regions, ref):
    return sum(len(iv) for reg in regions for iv in reg) == int(ref.lengths.sum())


def _bam_records(reads, ref, regions, with_unmapped):
    """Records of the regions (and, when asked and the regions cover the genome, the records with
    no position, which go at the BAM's end)."""
    keep = _in_regions(reads, ref, regions)
    if with_unmapped:
        keep |= reads.tid < 0
    return keep


def _in_regions(reads, ref, regions):
    """Records whose position lies in the regions."""
    keep = np.zeros(reads.n, np.bool_)
    tid_of = {n: i for i, n in enumerate(ref.names)}
    for reg in regions:
        for iv in reg:
            keep |= (reads.tid == tid_of[iv.chrom]) & (reads.pos >= iv.start) & (reads.pos < iv.end)
    return keep


def _is_snp(line):
    f = line.split("\t", 5)
    return len(f[3]) == 1 and all(len(a) == 1 for a in f[4].split(","))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kernels.call",
                                 description="Sort, mark duplicates and call SNPs and indels; writes VCF.gz + .tbi.")
    ap.add_argument("reference", help="reference FASTA (plain, gzip or bgzip) the reads were aligned to")
    ap.add_argument("inputs", nargs="*", help="BAM files: the aligner's output or part files (any order)")
    ap.add_argument("-o", "--output", required=True, help="output VCF (bgzipped, with a .tbi index)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--region", help="call only CHR:START-END (1-based, inclusive)")
    where.add_argument("--regions", type=int, help="call the whole genome split into N regions (ranks take regions)")
    where.add_argument("--parts", metavar="PREFIX",
                       help="read the aligner's part files PREFIX.rNNNN.bam (kernels.align --parts) of the regions in "
                            "--regions-bed; ranks take blocks of regions and read only their parts")
    ap.add_argument("--regions-bed", metavar="BED", help="with --parts: the regions the parts were written for")
    ap.add_argument("--neighbour-flank", type=int, default=NEIGHBOUR_FLANK, metavar="BASES",
                    help=f"with --parts and several ranks: of the regions next to a rank's block, read the reads "
                         f"within BASES of it (default {NEIGHBOUR_FLANK:,}; a window reaching further makes the "
                         f"rank read its contigs' parts whole)")
    ap.add_argument("--bam-out", help="also write the sorted, duplicate-marked records (of the region) as BAM + .bai")
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads per rank (default 1)")
    ap.add_argument("--max-bq", type=int, default=MAX_BQ,
                    help=f"trust a reported base quality up to this at most (default {MAX_BQ}); below it, "
                         f"the error rate of each quality is measured on the sample")
    ap.add_argument("--qual-counts", nargs="+", metavar="FILE",
                    help="base quality counts of the whole sample (kernels.align --qual-counts, one per chunk): "
                         "a sample called region by region then gets the same calls as called whole")
    ap.add_argument("--json", action="store_true", help="print a summary as JSON on stdout")
    ap.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    a = ap.parse_args(argv)
    if a.threads < 1:
        raise InputError(f"-t {a.threads}: need at least one thread")
    if a.neighbour_flank < 0:
        raise InputError(f"--neighbour-flank {a.neighbour_flank}: must be >= 0")
    if not a.quiet:
        note_compile()
    if bool(a.parts) != bool(a.regions_bed):
        raise InputError("--parts and --regions-bed go together (the part files and the regions they hold)")
    if bool(a.parts) == bool(a.inputs):
        raise InputError("give the BAM files, or --parts PREFIX --regions-bed BED (not both)")
    res = run(a.reference, a.inputs, a.output, a.region, a.regions, a.bam_out, a.threads,
              argv=["python -m kernels.call"] + (argv if argv is not None else sys.argv[1:]), max_bq=a.max_bq,
              qual_counts=a.qual_counts, parts_prefix=a.parts, regions_bed=a.regions_bed,
              flank=a.neighbour_flank)
    if res is None:
        return 0
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    if not a.quiet:
        print(f"{res['records']:,} records ({res['duplicates']:,} duplicates): {res['pass']:,} variants PASS "
              f"({res['snps_pass']:,} SNPs, {res['indels_pass']:,} indels), {res['variants'] - res['pass']:,} LowQual, "
              f"in {res['seconds']['total']:.1f} s -> {a.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="kernels.call")
