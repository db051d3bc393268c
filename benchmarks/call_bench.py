#!/usr/bin/env python3
"""Calling benchmark: genefarm's call against bcftools mpileup|call and freebayes on the same BAM
(genefarm's aligner output), same cores, one run; and the whole pipeline against bwa + samtools +
bcftools.

    python benchmarks/call_bench.py [--sets bench,full] [--threads 2] [--no-freebayes]
                                    [--data benchmarks/data] [--shared ../shared] [--out benchmarks/out/call]

Per set:
  align      genefarm align -o (name-grouped BAM) and --parts (per region, for the ranks), timed
  markdup    samtools fixmate -m | sort | markdup + index, against kernels.markdup (sort, mark, index)
  call       bcftools mpileup | call -mv and freebayes on the samtools-marked BAM; genefarm call on
             the aligner's BAM (its time includes its own sort and duplicate marking)
  ranks      genefarm call --parts with 1 rank pinned to one core and T ranks one per core
  pipeline   bwa mem -> samtools fixmate/sort/markdup -> bcftools, against genefarm align + call
Accuracy from the shared vcfcompare.py (SNP and indel precision/recall/F1; bcftools and freebayes
also filtered at QUAL >= 20, as peers.sh reports them). Every step is timed by /usr/bin/time -v.
Prints markdown tables with the issue's targets (PASS/FAIL) and writes OUT/results.json.

Sets: bench = chr20sim bench (400k pairs, 30x on 4 Mb); full = chr20full full (2.1M pairs, 10x on
the whole 63 Mb chr20). Needs bwa, samtools, bcftools, freebayes (make apt-bench).
"""
import argparse
import json
import os
import shutil
import subprocess
import time

from common import PY, RG, ROOT, VENV_BIN, ensure_data, log, machine, timed, vcfcompare, warm_up

SETS = {
    "bench": dict(dataset="chr20sim", ref="ref.fa", r1="bench_R1.fastq.gz", r2="bench_R2.fastq.gz",
                  truth="bench.truth.tsv.gz", regen=["bench"], nregions=8),
    "full": dict(dataset="chr20full", ref="ref.fa.gz", r1="full_R1.fastq.gz", r2="full_R2.fastq.gz",
                 truth="full.truth.tsv.gz", regen=["reads"], nregions=16),
}


def regions_bed(ref_fa, n, path):
    """n regions of about equal length tiling the contigs (cut only inside contigs)."""
    fai = [ln.split("\t")[:2] for ln in open(ref_fa + ".fai")]
    total = sum(int(x) for _, x in fai)
    with open(path, "w") as f:
        for name, ln in fai:
            ln = int(ln)
            k = max(1, round(n * ln / total))
            for i in range(k):
                f.write(f"{name}\t{ln * i // k}\t{ln * (i + 1) // k}\n")


def score(shared, ref, truth_vcf, vcf, label, q20=True):
    out = {"none": vcfcompare(shared, ref, truth_vcf, vcf, label)}
    if q20:
        filt = vcf.replace(".vcf.gz", ".q20.vcf.gz")
        subprocess.run(["bcftools", "view", "-i", "QUAL>=20", "-Oz", "-o", filt, vcf], check=True)
        out["QUAL>=20"] = vcfcompare(shared, ref, truth_vcf, filt, label + " q20")
    return out


def bench_set(name, shared, data, out, T, freebayes):
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
    regions_bed(ref, s["nregions"], j("regions.bed"))
    st["gf_align_parts"] = timed([PY, "-m", "kernels.align", j("gf"), p["r1"], p["r2"], "--regions", j("regions.bed"),
                                  "--parts", j("part"), "-t", str(T), "-R", RG, "-q"], label="genefarm align --parts")
    # --- sort + markdup
    st["samtools_markdup"] = timed(["bash", "-c", f"samtools fixmate -@{T} -m {j('gf.bam')} - | samtools sort -@{T} "
                                    f"-m 768M -T {j('st.tmp')} -o {j('st.sorted.bam')} - && samtools markdup -@{T} -s "
                                    f"{j('st.sorted.bam')} {j('st.md.bam')} && samtools index {j('st.md.bam')} && "
                                    f"rm {j('st.sorted.bam')}"], label="samtools fixmate+sort+markdup")
    st["gf_markdup"] = timed([PY, "-m", "kernels.markdup", j("gf.bam"), "-o", j("gf.md.bam"), "-t", str(T)],
                             label="genefarm markdup")
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
    base = [PY, "-m", "kernels.call", ref, "--parts", j("part"), "--regions-bed", j("regions.bed"), "-q", "-o"]
    st["gf_call_1rank"] = timed(["taskset", "-c", "0", mpiexec, "-n", "1"] + base + [j("r1.vcf.gz")],
                                label="genefarm call --parts, 1 rank pinned")
    st[f"gf_call_{T}ranks"] = timed([mpiexec, "-n", str(T), "-bind-to", "core"] + base + [j("rT.vcf.gz")],
                                    label=f"genefarm call --parts, {T} ranks pinned")
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
        out.append((name, f"{T} ranks >= 1.8x 1 rank (call --parts, pinned)", sp >= 1.8, f"{sp:.2f}x"))
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
                  f"+ bcftools {peer:.1f} s ({peer / gf:.2f}x).", "",
                  "| calls | filter | SNP P | SNP R | SNP F1 | INDEL P | INDEL R | INDEL F1 |", "|---|---|---|---|---|---|---|---|"]
        for tool, a in r["accuracy"].items():
            for filt, x in a.items():
                s_, i_ = x["SNP"], x["INDEL"]
                lines.append(f"| {tool} | {filt} | {s_['precision']:.4f} | {s_['recall']:.4f} | {s_['F1']:.4f} | "
                             f"{i_['precision']:.4f} | {i_['recall']:.4f} | {i_['F1']:.4f} |")
        lines.append("")
    lines += ["| set | target | result | measured |", "|---|---|---|---|"]
    for name, what, ok, detail in targets(res, T):
        lines.append(f"| {name} | {what} | {'PASS' if ok else 'FAIL'} | {detail} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="bench,full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-freebayes", action="store_true", help="leave freebayes out (it takes long on full)")
    ap.add_argument("--data", default=os.path.join(ROOT, "benchmarks", "data"))
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "call"))
    a = ap.parse_args()
    for tool in ("bwa", "samtools", "bcftools", "freebayes", "bgzip", "/usr/bin/time", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make apt-bench` first")
    os.makedirs(a.out, exist_ok=True)
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": a.threads,
           "sets": {}}
    log("== warming up (compiling the kernels into the cache)")
    warm_up(a.out)
    for name in a.sets.split(","):
        res["sets"][name] = bench_set(name, a.shared, a.data, a.out, a.threads, not a.no_freebayes)
        json.dump(res, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    text = report(res, a.threads)
    open(os.path.join(a.out, "report.md"), "w").write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
