#!/usr/bin/env python3
"""Calling benchmark: genefarm's call against bcftools mpileup|call and freebayes on the same BAM
(genefarm's aligner output), same cores, one run; and the whole pipeline against bwa + samtools +
bcftools.

    python benchmarks/call_bench.py [--sets bench,full] [--threads 2] [--no-freebayes] [--rank-reps 5]
                                    [--markdup-reps 3]
                                    [--data benchmarks/data] [--shared ../shared] [--out benchmarks/out/call]

Per set:
  align      genefarm align -o (name-grouped BAM) and --parts (per region, for the ranks), timed
  markdup    samtools fixmate -m | sort | markdup + index, against kernels.markdup (sort, mark, index),
             --markdup-reps times each (medians)
  call       bcftools mpileup | call -mv and freebayes on the samtools-marked BAM; genefarm call on
             the aligner's BAM (its time includes its own sort and duplicate marking)
  ranks      genefarm call --parts with 1 rank pinned to one core and T ranks one per core, run
             --rank-reps times each, interleaved (medians); the regions are planned as genefarm's
             pipeline plans them (master.planner)
  pipeline   bwa mem -> samtools fixmate/sort/markdup -> bcftools, against genefarm align + call
Accuracy from the shared vcfcompare.py (SNP and indel precision/recall/F1; bcftools and freebayes
also filtered at QUAL >= 20, as peers.sh reports them). Every step is timed by /usr/bin/time -v.
Prints markdown tables with the issue's targets (PASS/FAIL) and writes OUT/results.json.

Sets: bench = chr20sim bench (400k pairs, 30x on 4 Mb); full = chr20full full (2.1M pairs, 10x on
the whole 63 Mb chr20). Needs bwa, samtools, bcftools, freebayes (make apt-bench).
"""
import json
import os
import statistics
import subprocess
import sys

from common import (PY, RG, ROOT, VENV_BIN, bench_args, ensure_data, log, run_sets, target_table, timed,
                    vcfcompare, warm_up)

sys.path.insert(0, ROOT)            # master.planner plans the --parts regions

SETS = {
    "bench": dict(dataset="chr20sim", ref="ref.fa", r1="bench_R1.fastq.gz", r2="bench_R2.fastq.gz",
                  truth="bench.truth.tsv.gz", regen=["bench"], nregions=8),
    "full": dict(dataset="chr20full", ref="ref.fa.gz", r1="full_R1.fastq.gz", r2="full_R2.fastq.gz",
                 truth="full.truth.tsv.gz", regen=["reads"], nregions=16),
}


def regions_bed(index_prefix, n, path):
    """n regions as genefarm's pipeline plans them (master.planner: balanced by non-N bases, cuts
    moved into N runs), from the genefarm index of the reference."""
    from master import planner
    planner.write_bed(planner.plan(planner.contigs_of_index(index_prefix), n), path)


def score(shared, ref, truth_vcf, vcf, label, q20=True):
    out = {"none": vcfcompare(shared, ref, truth_vcf, vcf, label)}
    if q20:
        filt = vcf.replace(".vcf.gz", ".q20.vcf.gz")
        subprocess.run(["bcftools", "view", "-i", "QUAL>=20", "-Oz", "-o", filt, vcf], check=True)
        out["QUAL>=20"] = vcfcompare(shared, ref, truth_vcf, filt, label + " q20")
    return out


def bench_set(name, shared, data, out, T, freebayes, reps, md_reps=3):
    s = SETS[name]
    p = ensure_data(shared, data, s)
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    truth_vcf = os.path.join(shared, "data", s["dataset"], "truth.vcf.gz")
    ref = os.path.join(d, "ref.fa")
    if not os.path.exists(ref):
        subprocess.run(f"zcat -f '{p['ref']}' > '{ref}' && samtools faidx '{ref}'", shell=True, check=True)
    res = {"steps": {}}
    st = res["steps"]
    j = lambda *a: os.path.join(d, *a)  # noqa: E731
    log(f"== {name}: {T} cores")
    # --- genefarm align (index built first, not timed here: see align_bench)
    subprocess.run([PY, "-m", "kernels.index", ref, j("gf")], check=True, capture_output=True)
    st["gf_align"] = timed([PY, "-m", "kernels.align", j("gf"), p["r1"], p["r2"], "-o", j("gf.bam"), "-t", str(T),
                            "-R", RG, "-q", "--qual-counts", j("gf.qual.json")], label="genefarm align")
    regions_bed(j("gf"), s["nregions"], j("regions.bed"))
    st["gf_align_parts"] = timed([PY, "-m", "kernels.align", j("gf"), p["r1"], p["r2"], "--regions", j("regions.bed"),
                                  "--parts", j("part"), "-t", str(T), "-R", RG, "-q"], label="genefarm align --parts")
    # --- sort + markdup
    st["samtools_markdup"] = timed(["bash", "-c", f"samtools fixmate -@{T} -m {j('gf.bam')} - | samtools sort -@{T} "
                                    f"-m 768M -T {j('st.tmp')} -o {j('st.sorted.bam')} - && samtools markdup -@{T} -s "
                                    f"{j('st.sorted.bam')} {j('st.md.bam')} && samtools index {j('st.md.bam')} && "
                                    f"rm {j('st.sorted.bam')}"], reps=md_reps, label="samtools fixmate+sort+markdup")
    st["gf_markdup"] = timed([PY, "-m", "kernels.markdup", j("gf.bam"), "-o", j("gf.md.bam"), "-t", str(T)],
                             reps=md_reps, label="genefarm markdup")
    dups = [int(subprocess.run(["samtools", "view", "-c", "-f", "1024", b], capture_output=True, text=True).stdout)
            for b in (j("st.md.bam"), j("gf.md.bam"))]
    res["duplicates"] = {"samtools": dups[0], "genefarm": dups[1]}
    # --- callers on the same BAM
    st["bcftools"] = timed(["bash", "-c", f"bcftools mpileup --threads {T} -f {ref} -a AD,DP -Ou {j('st.md.bam')} | "
                            f"bcftools call --threads {T} -mv -Oz -o {j('bcftools.vcf.gz')}"], label="bcftools mpileup|call")
    if freebayes:
        st["freebayes"] = timed(["bash", "-c", f"freebayes -f {ref} {j('st.md.bam')} | bgzip -c > {j('freebayes.vcf.gz')}"],
                                label="freebayes")
    st["gf_call"] = timed([PY, "-m", "kernels.call", ref, j("gf.bam"), "-o", j("gf.vcf.gz"), "-t", str(T), "-q"],
                          label="genefarm call")
    # --- ranks on parts: one pinned to a core, T one per core
    mpiexec = os.path.join(VENV_BIN, "mpiexec")
    base = [PY, "-m", "kernels.call", ref, "--parts", j("part"), "--regions-bed", j("regions.bed"), "-q", "--json",
            "-o"]
    # one untimed run first: the parts were written minutes ago, and this machine pages out files
    # left idle for a minute (DAMON), so the first run would read them from disk
    subprocess.run([mpiexec, "-n", str(T)] + base + [j("rT.vcf.gz")], check=True, capture_output=True)
    # interleaved (1, T, 1, T, ...), so that a slow spell of the machine hits both alike; medians
    one, many, inside = [], [], {1: [], T: []}
    for _ in range(reps):
        for k, runs, cmd in ((1, one, ["taskset", "-c", "0", mpiexec, "-n", "1"]),
                             (T, many, [mpiexec, "-n", str(T), "-bind-to", "core"])):
            runs.append(timed(cmd + base + [j(f"r{'1' if k == 1 else 'T'}.vcf.gz")], j("ranks.json"),
                              label=f"genefarm call --parts, {k} rank{'s' if k > 1 else ''} pinned"))
            with open(j("ranks.json")) as f:
                inside[k].append(json.load(f)["seconds"]["total"])     # from the reference read to the VCF written
    st["gf_call_1rank"], st[f"gf_call_{T}ranks"] = median_of(one), median_of(many)
    # what each process pays outside the work that ranks share: start-up (Python, imports, MPI_Init) and exit
    res["ranks_inside"] = {str(k): {"total": statistics.median(v), "outside": statistics.median(
        r["runs"][0][0] - t for r, t in zip(one if k == 1 else many, v))} for k, v in inside.items()}
    same = [subprocess.run(f"cmp <(zgrep -v '^##' {a}) <(zgrep -v '^##' {j('gf.vcf.gz')})", shell=True,
                           executable="/bin/bash").returncode == 0 for a in (j("r1.vcf.gz"), j("rT.vcf.gz"))]
    res["parts_same_as_whole"] = all(same)
    # --- the peer pipeline: bwa mem -> samtools -> bcftools
    subprocess.run(["bwa", "index", "-p", j("bwaidx"), ref], check=True, capture_output=True)
    st["bwa_mem"] = timed(["bwa", "mem", "-t", str(T), "-R", RG, j("bwaidx"), p["r1"], p["r2"]], j("bwa.sam"),
                          label="bwa mem")
    st["bwa_markdup"] = timed(["bash", "-c", f"samtools fixmate -@{T} -m {j('bwa.sam')} - | samtools sort -@{T} "
                               f"-m 768M -T {j('bw.tmp')} -o {j('bw.sorted.bam')} - && samtools markdup -@{T} -s "
                               f"{j('bw.sorted.bam')} {j('bwa.md.bam')} && samtools index {j('bwa.md.bam')} && "
                               f"rm {j('bw.sorted.bam')} {j('bwa.sam')}"], label="samtools on bwa")
    st["bwa_bcftools"] = timed(["bash", "-c", f"bcftools mpileup --threads {T} -f {ref} -a AD,DP -Ou {j('bwa.md.bam')} | "
                                f"bcftools call --threads {T} -mv -Oz -o {j('bwa.bcftools.vcf.gz')}"],
                               label="bcftools on bwa")
    # --- accuracy
    res["accuracy"] = {"genefarm": score(shared, ref, truth_vcf, j("gf.vcf.gz"), "genefarm", q20=False),
                       "bcftools": score(shared, ref, truth_vcf, j("bcftools.vcf.gz"), "bcftools"),
                       "bwa+bcftools": score(shared, ref, truth_vcf, j("bwa.bcftools.vcf.gz"), "bwa+bcftools")}
    if freebayes:
        res["accuracy"]["freebayes"] = score(shared, ref, truth_vcf, j("freebayes.vcf.gz"), "freebayes")
    for f in ("gf.bam", "gf.md.bam", "st.md.bam", "bwa.md.bam"):
        if os.path.exists(j(f)):
            os.unlink(j(f))
    return res


def median_of(runs):
    """timed() results of repeated runs as one: medians, every run kept."""
    every = [x for r in runs for x in r["runs"]]
    return {"wall": statistics.median(x[0] for x in every), "cpu": statistics.median(x[1] for x in every),
            "rss_mb": statistics.median(x[2] for x in every), "runs": every}


def targets(res, T):
    out = []
    for name, r in res["sets"].items():
        st, acc = r["steps"], r["accuracy"]
        g = acc["genefarm"]["none"]
        bc = acc["bcftools"]
        for cls in ("SNP", "INDEL"):
            best = max(bc["none"][cls]["F1"], bc["QUAL>=20"][cls]["F1"])
            out.append((name, f"{cls} F1 >= bcftools (raw {bc['none'][cls]['F1']:.4f})",
                        g[cls]["F1"] >= bc["none"][cls]["F1"], f"{g[cls]['F1']:.4f}"))
            out.append((name, f"{cls} F1 >= bcftools filtered QUAL>=20 ({bc['QUAL>=20'][cls]['F1']:.4f})",
                        g[cls]["F1"] >= best, f"{g[cls]['F1']:.4f}"))
        out.append((name, "SNP precision >= 0.999", g["SNP"]["precision"] >= 0.999, f"{g['SNP']['precision']:.4f}"))
        out.append((name, "calling throughput >= 1.0x bcftools mpileup|call (wall; genefarm incl. its sort+markdup)",
                    st["bcftools"]["wall"] / st["gf_call"]["wall"] >= 1.0,
                    f"{st['bcftools']['wall'] / st['gf_call']['wall']:.2f}x"))
        sp = st["gf_call_1rank"]["wall"] / st[f"gf_call_{T}ranks"]["wall"]
        each = ", ".join(f"{a[0]:.1f}/{b[0]:.1f}" for a, b in zip(st["gf_call_1rank"]["runs"],
                                                                 st[f"gf_call_{T}ranks"]["runs"]))
        out.append((name, f"{T} ranks >= 1.8x 1 rank (call --parts, pinned; median wall)", sp >= 1.8,
                    f"{sp:.2f}x (runs, 1 rank/{T} ranks s: {each})"))
        md = st["samtools_markdup"]["wall"] / st["gf_markdup"]["wall"]
        out.append((name, "sort+markdup >= samtools fixmate+sort+markdup", md >= 1.0,
                    f"{md:.2f}x, duplicates {r['duplicates']['genefarm']} vs {r['duplicates']['samtools']}"))
        out.append((name, "call --parts (1 and T ranks) = whole-BAM call", r["parts_same_as_whole"], ""))
    return out


def report(res, T):
    lines = [f"Machine: {res['machine']}; {res['date']}; {T} cores per tool.", ""]
    for name, r in res["sets"].items():
        lines += [f"### {name}", "", "| step | wall s | CPU s | peak RSS MB |", "|---|---|---|---|"]
        for k, t in r["steps"].items():
            lines.append(f"| {k} | {t['wall']:.1f} | {t['cpu']:.1f} | {t['rss_mb']:.0f} |")
        st = r["steps"]
        gf = st["gf_align"]["wall"] + st["gf_call"]["wall"]
        peer = st["bwa_mem"]["wall"] + st["bwa_markdup"]["wall"] + st["bwa_bcftools"]["wall"]
        lines += ["", f"Whole pipeline, wall: genefarm align + call {gf:.1f} s; bwa mem + samtools fixmate/sort/markdup "
                  f"+ bcftools {peer:.1f} s ({peer / gf:.2f}x).", ""]
        ins = r.get("ranks_inside")
        if ins:
            a, b = ins["1"], ins[str(T)]
            lines += [f"Ranks, medians: inside the process (call --json seconds.total: reference read to VCF "
                      f"written) 1 rank {a['total']:.2f} s, {T} ranks {b['total']:.2f} s ({a['total'] / b['total']:.2f}x); "
                      f"outside it (wall minus that: Python start-up, imports, MPI_Init, exit) {a['outside']:.2f} s "
                      f"and {b['outside']:.2f} s.", ""]
        lines += ["| calls | filter | SNP P | SNP R | SNP F1 | INDEL P | INDEL R | INDEL F1 |", "|---|---|---|---|---|---|---|---|"]
        for tool, a in r["accuracy"].items():
            for filt, x in a.items():
                s_, i_ = x["SNP"], x["INDEL"]
                lines.append(f"| {tool} | {filt} | {s_['precision']:.4f} | {s_['recall']:.4f} | {s_['F1']:.4f} | "
                             f"{i_['precision']:.4f} | {i_['recall']:.4f} | {i_['F1']:.4f} |")
        lines.append("")
    lines += target_table(targets(res, T))
    return "\n".join(lines)


def main():
    ap = bench_args(__doc__, "bench,full", "call")
    ap.add_argument("--rank-reps", type=int, default=5, help="runs of 1 rank and of T ranks, interleaved (median)")
    ap.add_argument("--markdup-reps", type=int, default=3, help="runs of samtools' and genefarm's sort+markdup (median)")
    ap.add_argument("--no-freebayes", action="store_true", help="leave freebayes out (it takes long on full)")
    a = ap.parse_args()

    def before(res):
        log("== warming up (compiling the kernels into the cache)")
        warm_up(a.out)
    run_sets(a, ("bwa", "samtools", "bcftools", "freebayes", "bgzip"),
             lambda name: bench_set(name, a.shared, a.data, a.out, a.threads, not a.no_freebayes, a.rank_reps,
                                    a.markdup_reps),
             report, before)


if __name__ == "__main__":
    main()
