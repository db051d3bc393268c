"""Candidate alleles of a window and how they are genotyped: bases and indels seen often enough
(`candidates`), grouped into isolated SNP sites and haplotype windows (`plan`).

Allele, PileSite and Window are the data between the pileup and the genotyping (kernels.caller).
"""
from dataclasses import dataclass

import numpy as np

MIN_ALT = 2
MIN_ALT_FRAC = 0.05
HAP_NEAR = 10
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


