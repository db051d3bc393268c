#!/usr/bin/env python3
"""Human-genome scale: genefarm's kernels against minimap2 and bwa on hs38sim (GRCh38's size and
shape: 3.2 Gb in 3,367 contigs with ALT, decoy and HLA), side by side in one run.

    python benchmarks/scale_bench.py [--threads 2] [--pairs 1000000] [--bwa-index run|kept|skip]
                                     [--data benchmarks/data] [--shared ../shared] [--out benchmarks/out/scale]

1. Index build: wall, CPU, peak RSS, size on disk, for `kernels.index` (with the ALT table),
   `minimap2 -x sr -d` and `bwa index` (bwa's takes about an hour: with --bwa-index kept its
   figures come from the run that made the index, kept with their date in OUT/bwa_index.json).
2. Alignment of the first N pairs of hs38sim (its `sub` set): wall, CPU, reads per CPU-second,
   peak RSS and its private and shared parts (sampled from /proc/PID/smaps_rollup), for
   genefarm (T threads, and T MPI ranks of one thread each), `minimap2 -ax sr` and `bwa mem`
   (ALT-aware: the .alt file names the ALT and HLA contigs); start-up (2,000 pairs) with the
   index files evicted from the page cache (cold) and cached (warm); accuracy from the shared
   mapeval.py, and among the reads from primary sequence that has an ALT copy, the share placed
   right with MAPQ >= 20.
3. Calling: a 5 Mb window of chr6 (holding a 763 kb ALT) at 30x, reads simulated by
   mason_simulator from its two haplotypes, aligned by genefarm against the whole index; the
   window is called as a call task of the pipeline (part file, --only, the sample's quality
   counts, the index as reference) and by `bcftools mpileup | call` on the same reads sorted and
   duplicate-marked by samtools: wall, CPU, peak RSS, SNP/indel precision, recall, F1.
Writes OUT/results.json and OUT/report.md (printed). Needs make apt-bench (minimap2, bwa,
samtools, bcftools, seqan-apps, GNU time) and the hs38sim data (made by its regenerate.sh into
--data when missing, about 30 minutes).
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from common import PY, RG, VENV_BIN, bench_args, log, machine, mapeval, target_table, vcfcompare, warm_up

WINDOW = ("chr6", 150_000_000, 155_000_000)     # 0-based, half-open
WINDOW_PAIRS = 500_000                            # 2 x 150 bp x 500k / 5 Mb = 30x


# ---------------------------------------------------------------- timing with memory parts

def _smaps(pid):
    """[(command, rss, private, shared)] in MB of a process, its children and grandchildren now
    (/proc/PID/status: RssAnon is private, RssFile + RssShmem shared)."""
    pids = [pid]
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        pids += [int(k) for k in kids]
        for k in kids:
            try:
                pids += [int(x) for x in open(f"/proc/{k}/task/{k}/children").read().split()]
            except OSError:
                pass
    except OSError:
        pass
    per = []
    for p in pids:
        try:
            d = {}
            for ln in open(f"/proc/{p}/status"):
                f = ln.split()
                if len(f) >= 2 and f[0].endswith(":") and f[1].isdigit():
                    d[f[0][:-1]] = int(f[1])
            comm = open(f"/proc/{p}/comm").read().strip()
            # private: anonymous memory (the process's own); shared: file pages mapped (the index
            # through the page cache, shared by every process that maps it) and shared memory
            per.append((comm, d.get("VmRSS", 0) / 1024, d.get("RssAnon", 0) / 1024,
                        (d.get("RssFile", 0) + d.get("RssShmem", 0)) / 1024))
        except OSError:
            pass
    return per


def timed_mem(cmd, out_path=None, env=None, label=""):
    """cmd under /usr/bin/time -v, its processes' smaps sampled every 0.2 s: wall, CPU, peak RSS
    (the largest process), and the peak private and shared RSS of the largest process (and of each
    python rank, for MPI runs)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        stdout = open(out_path, "wb") if out_path else subprocess.DEVNULL
        p = subprocess.Popen(["/usr/bin/time", "-v", "-o", tf.name] + cmd, stdout=stdout, stderr=subprocess.PIPE,
                             env=env)
        peak = {"private": 0.0, "shared": 0.0, "rss": 0.0, "rank_private": 0.0}
        err = []
        t = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
        t.start()
        while p.poll() is None:
            per = _smaps(p.pid)
            work = [x for x in per if x[0] not in ("time", "bash", "mpiexec", "hydra_pmi_proxy")]
            if work:
                big = max(work, key=lambda x: x[1])
                peak["rss"] = max(peak["rss"], big[1])
                peak["private"] = max(peak["private"], big[2])
                peak["shared"] = max(peak["shared"], big[3])
                ranks = [x for x in work if x[0].startswith("python")]
                if ranks:
                    peak["rank_private"] = max(peak["rank_private"], max(x[2] for x in ranks))
            time.sleep(0.2)
        t.join()
        if out_path:
            stdout.close()
        if p.returncode != 0:
            raise SystemExit(f"{label} failed ({p.returncode}):\n{b''.join(err).decode()[-3000:]}")
        txt = tf.read()
    import re
    m = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", txt)
    wall = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    cpu = float(re.search(r"User time \(seconds\): ([\d.]+)", txt).group(1)) + \
        float(re.search(r"System time \(seconds\): ([\d.]+)", txt).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", txt).group(1)) / 1024
    res = {"wall": round(wall, 2), "cpu": round(cpu, 2), "rss_mb": round(rss, 1),
           **{f"{k}_mb": round(v, 1) for k, v in peak.items()}}
    log(f"  {label}: wall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {rss:,.0f} MB (private {peak['private']:,.0f}, "
        f"shared {peak['shared']:,.0f})")
    return res


def evict(paths):
    """Drop files from the page cache (POSIX_FADV_DONTNEED: clean pages of files we can open)."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        except OSError:
            pass


def cat_into_cache(paths):
    for p in paths:
        subprocess.run(["cat", p], stdout=subprocess.DEVNULL, check=True)


# ---------------------------------------------------------------- data

def ensure_hs38sim(shared, data):
    d = os.path.join(data, "hs38sim")
    need = ["ref.fa", "ref.fa.gz", "alt.tsv", "truth.vcf.gz", "sim_input.vcf.gz", "sub_R1.fastq.gz", "sub_R2.fastq.gz",
            "sub.truth.tsv.gz"]
    if not all(os.path.exists(os.path.join(d, f)) for f in need):
        log(f"generating hs38sim into {d} (its regenerate.sh; about 30 minutes)")
        env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
        subprocess.run(["bash", os.path.join(shared, "data", "hs38sim", "scripts", "regenerate.sh"), "all", d],
                       check=True, env=env)
    return d


def head_pairs(src, dst, n):
    if os.path.exists(dst):
        return
    subprocess.run(f"zcat '{src}' | head -n {4 * n} | gzip -1 > '{dst}.tmp' && mv '{dst}.tmp' '{dst}'", shell=True,
                   check=True)


def head_truth(src, dst, n):
    if os.path.exists(dst):
        return
    subprocess.run(f"zcat '{src}' | head -n {2 * n + 1} | gzip -1 > '{dst}.tmp' && mv '{dst}.tmp' '{dst}'",
                   shell=True, check=True)


def bwa_alt(d, data_dir):
    """bwa's idxbase.alt: bwa mem reads the ALT contig names from it (column 1 of SAM lines); the
    HLA alleles are ALT in bwa's own hs38DH set, so they are listed too."""
    alt = os.path.join(d, "bwaidx.alt")
    names = [ln.split("\t")[0] for ln in open(os.path.join(data_dir, "alt.tsv")) if not ln.startswith("#")]
    names += [ln.split("\t")[0] for ln in open(os.path.join(data_dir, "ref.fa.fai")) if ln.startswith("HLA-")]
    with open(alt, "w") as f:
        for n in names:
            f.write(f"{n}\t0\t*\t0\t0\t*\t*\t0\t0\t*\t*\n")
    return alt


def window_reads(d, data_dir, shared):
    """30x of WINDOW from its two haplotypes (mason_simulator, as hs38sim's own reads were made)."""
    out = {k: os.path.join(d, f"win_{k}") for k in ("R1.fastq.gz", "R2.fastq.gz", "truth.vcf.gz")}
    if all(os.path.exists(p) for p in out.values()):
        return out
    c, a, b = WINDOW
    w = tempfile.mkdtemp(dir=d)
    region = f"{c}:{a + 1}-{b}"
    subprocess.run(f"samtools faidx '{data_dir}/ref.fa' {region} | sed 's/^>.*/>{c}/' > {w}/win.fa && "
                   f"samtools faidx {w}/win.fa", shell=True, check=True)
    # the window's variants, moved to window coordinates (mason simulates from them)
    vin = subprocess.run(["bcftools", "view", "-H", "-t", region, os.path.join(data_dir, "sim_input.vcf.gz")],
                         capture_output=True, text=True, check=True).stdout
    hdr = subprocess.run(["bcftools", "view", "-h", os.path.join(data_dir, "sim_input.vcf.gz")],
                         capture_output=True, text=True, check=True).stdout
    with open(f"{w}/win.vcf", "w") as f:
        for ln in hdr.splitlines():
            if ln.startswith("##contig") and f"ID={c}," not in ln:
                continue
            if ln.startswith("##contig"):
                ln = f"##contig=<ID={c},length={b - a}>"
            f.write(ln + "\n")
        for ln in vin.splitlines():
            x = ln.split("\t")
            x[1] = str(int(x[1]) - a)
            f.write("\t".join(x) + "\n")
    env = dict(os.environ, PATH=os.environ["PATH"] + ":/usr/lib/seqan/bin")
    subprocess.run(["mason_simulator", "-ir", f"{w}/win.fa", "-iv", f"{w}/win.vcf", "-n", str(WINDOW_PAIRS),
                    "--seed", "606", "--num-threads", "1", "--illumina-read-length", "150",
                    "--fragment-mean-size", "350", "--fragment-size-std-dev", "50", "--read-name-prefix", "win.",
                    "-o", f"{w}/R1.fastq.gz", "-or", f"{w}/R2.fastq.gz"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the reads' positions are window coordinates; they are aligned against the whole genome, so
    # only the truth needs nothing more than the genome's own truth VCF over the window
    subprocess.run(["bcftools", "view", "-r", region, "-Oz", "-o", f"{w}/truth.vcf.gz",
                    os.path.join(data_dir, "truth.vcf.gz")], check=True)
    subprocess.run(["tabix", "-p", "vcf", f"{w}/truth.vcf.gz"], check=True)
    for k, src in (("R1.fastq.gz", "R1.fastq.gz"), ("R2.fastq.gz", "R2.fastq.gz"), ("truth.vcf.gz", "truth.vcf.gz")):
        shutil.move(f"{w}/{src}", out[k])
    shutil.move(f"{w}/truth.vcf.gz.tbi", out["truth.vcf.gz"] + ".tbi")
    shutil.rmtree(w, ignore_errors=True)
    return out


# ---------------------------------------------------------------- accuracy in ALT-covered sequence

def alt_region_accuracy(truth_tsv, bam, data_dir):
    """Among reads whose true position lies in primary sequence that has an ALT copy: the share
    placed within 10 bp of it with MAPQ >= 20, and the share with MAPQ >= 20 at all."""
    import bisect

    import pysam
    spans = {}
    for ln in open(os.path.join(data_dir, "alt.tsv")):
        if ln.startswith("#"):
            continue
        _, c, s, e = ln.rstrip("\n").split("\t")[:4]
        spans.setdefault(c, []).append((int(s), int(e)))
    for c in spans:
        spans[c].sort()
    starts = {c: [s for s, _ in v] for c, v in spans.items()}
    want = {}
    with gzip.open(truth_tsv, "rt") as f:
        for ln in f:
            if ln.startswith("#"):
                continue
            q, m, c, s, e = ln.split("\t")[:5]
            if c not in spans:
                continue
            s, e = int(s) - 1, int(e)
            i = bisect.bisect_right(starts[c], s) - 1
            if i >= 0 and spans[c][i][0] <= s and e <= spans[c][i][1]:
                want[(q, int(m))] = (c, s, e)
    n = good = hq = 0
    with pysam.AlignmentFile(bam) as f:
        for r in f:
            if r.is_secondary or r.is_supplementary:
                continue
            key = (r.query_name.rsplit("/", 1)[0], 2 if r.is_read2 else 1)
            t = want.get(key)
            if t is None:
                continue
            n += 1
            if r.is_unmapped or r.mapping_quality < 20:
                continue
            hq += 1
            cig = r.cigartuples or []
            lc = cig[0][1] if cig and cig[0][0] == 4 else 0
            rc = cig[-1][1] if cig and cig[-1][0] == 4 else 0
            if r.reference_name == t[0] and (abs(r.reference_start - lc - t[1]) <= 10 or
                                             abs(r.reference_end + rc - t[2]) <= 10):
                good += 1
    return {"reads": n, "correct_mapq20": round(good / max(n, 1), 5), "mapq20": round(hq / max(n, 1), 5)}


# ---------------------------------------------------------------- the run

def main():
    ap = bench_args(__doc__, "hs38sim", "scale")
    ap.add_argument("--pairs", type=int, default=1_000_000, help="read pairs aligned (default 1,000,000)")
    ap.add_argument("--bwa-index", choices=("run", "kept", "skip"), default="kept",
                    help="build bwa's index in this run, use the figures kept from the run that built it "
                         "(default; builds it when there is none), or leave bwa out")
    ap.add_argument("--skip-call", action="store_true", help="leave the calling part out")
    a = ap.parse_args()
    for tool in ("minimap2", "bwa", "samtools", "bcftools", "/usr/bin/time"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make apt-bench` first")
    T = a.threads
    os.makedirs(a.out, exist_ok=True)
    dd = ensure_hs38sim(a.shared, a.data)
    d = a.out
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": T,
           "pairs": a.pairs, "index": {}, "align": {}, "startup": {}, "accuracy": {}, "alt_regions": {}}
    warm_up(d)
    ref_gz, ref_fa = os.path.join(dd, "ref.fa.gz"), os.path.join(dd, "ref.fa")

    # ---- 1. indexes
    gf = os.path.join(d, "gf")
    log("== index")
    t = timed_mem([PY, "-m", "kernels.index", ref_gz, gf, "--alt", os.path.join(dd, "alt.tsv"), "-q"],
                  label="genefarm index")
    gfiles = [f"{gf}.gfi.{x}" for x in ("json", "seq.npy", "gaps.npy", "mzb.npy", "mzk.npy", "mzo.npy", "mzp.npy")]
    t["bytes"] = sum(os.path.getsize(p) for p in gfiles)
    res["index"]["genefarm"] = t
    mmi = os.path.join(d, "hs.mmi")
    t = timed_mem(["minimap2", "-x", "sr", "-t", str(T), "-d", mmi, ref_fa], label="minimap2 index")
    t["bytes"] = os.path.getsize(mmi)
    res["index"]["minimap2"] = t
    bwaidx = os.path.join(d, "bwaidx")
    kept = os.path.join(d, "bwa_index.json")
    have_bwa = all(os.path.exists(bwaidx + s) for s in (".amb", ".ann", ".bwt", ".pac", ".sa"))
    if a.bwa_index == "run" or (a.bwa_index == "kept" and not (have_bwa and os.path.exists(kept))):
        log("  bwa index: about an hour")
        t = timed_mem(["bwa", "index", "-p", bwaidx, ref_fa], label="bwa index")
        t["bytes"] = sum(os.path.getsize(bwaidx + s) for s in (".amb", ".ann", ".bwt", ".pac", ".sa"))
        t["date"] = res["date"]
        json.dump(t, open(kept, "w"), indent=1)
        have_bwa = True
    if a.bwa_index != "skip" and have_bwa:
        res["index"]["bwa"] = json.load(open(kept))
        bwa_alt(d, dd)
    use_bwa = a.bwa_index != "skip" and have_bwa

    # ---- 2. alignment
    r1, r2, truth = (os.path.join(d, f"in_{x}") for x in ("R1.fastq.gz", "R2.fastq.gz", "truth.tsv.gz"))
    head_pairs(os.path.join(dd, "sub_R1.fastq.gz"), r1, a.pairs)
    head_pairs(os.path.join(dd, "sub_R2.fastq.gz"), r2, a.pairs)
    head_truth(os.path.join(dd, "sub.truth.tsv.gz"), truth, a.pairs)
    s1, s2 = os.path.join(d, "small_R1.fastq.gz"), os.path.join(d, "small_R2.fastq.gz")
    head_pairs(r1, s1, 2000)
    head_pairs(r2, s2, 2000)
    mpiexec = os.path.join(VENV_BIN, "mpiexec")
    cmds = {
        "genefarm": lambda x1, x2, o: ([PY, "-m", "kernels.align", gf, x1, x2, "-o", o, "-t", str(T), "-R", RG, "-q"],
                                       None),
        "genefarm_ranks": lambda x1, x2, o: ([mpiexec, "-n", str(T), PY, "-m", "kernels.align", gf, x1, x2, "-o", o,
                                              "-t", "1", "-R", RG, "-q"], None),
        "minimap2": lambda x1, x2, o: (["minimap2", "-ax", "sr", "-t", str(T), "-R", RG, mmi, x1, x2], o),
    }
    files = {"genefarm": gfiles, "genefarm_ranks": gfiles, "minimap2": [mmi]}
    if use_bwa:
        cmds["bwa"] = lambda x1, x2, o: (["bwa", "mem", "-t", str(T), "-R", RG, bwaidx, x1, x2], o)
        files["bwa"] = [bwaidx + s for s in (".amb", ".ann", ".bwt", ".pac", ".sa", ".alt")]
    log("== start-up (2,000 pairs): index evicted from the page cache, then cached")
    for tool, mk in cmds.items():
        res["startup"][tool] = {}
        for state in ("cold", "warm"):
            if state == "cold":
                evict(files[tool])
            else:
                cat_into_cache(files[tool])
            out = os.path.join(d, f"small.{tool}.{'sam' if tool in ('minimap2', 'bwa') else 'bam'}")
            cmd, stdout = mk(s1, s2, out)
            res["startup"][tool][state] = timed_mem(cmd, out_path=stdout, label=f"{tool} start-up {state}")
    log(f"== alignment of {a.pairs:,} pairs (index in the page cache)")
    for tool, mk in cmds.items():
        cat_into_cache(files[tool])
        out = os.path.join(d, f"aln.{tool}.{'sam' if tool in ('minimap2', 'bwa') else 'bam'}")
        cmd, stdout = mk(r1, r2, out)
        t = timed_mem(cmd, out_path=stdout, label=f"{tool} align")
        t["reads_per_cpu_s"] = round(2 * a.pairs / t["cpu"])
        res["align"][tool] = t
        if tool != "genefarm_ranks":
            res["accuracy"][tool] = mapeval(a.shared, truth, out)
            res["alt_regions"][tool] = alt_region_accuracy(truth, out, dd)
            log(f"  {tool}: {res['accuracy'][tool]}  ALT-covered: {res['alt_regions'][tool]}")
    for f in os.listdir(d):
        if f.startswith("aln.") and f.endswith(".sam"):
            os.unlink(os.path.join(d, f))

    # ---- 3. calling a 5 Mb window at 30x
    if not a.skip_call:
        res["call"] = call_window(d, dd, gf, ref_fa, T, a.shared)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    text = report(res)
    with open(os.path.join(d, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)


def call_window(d, dd, gf, ref_fa, T, shared):
    log("== calling: a 5 Mb window of chr6 at 30x")
    w = window_reads(d, dd, shared)
    c, a, b = WINDOW
    lengths = [(ln.split("\t")[0], int(ln.split("\t")[1])) for ln in open(os.path.join(dd, "ref.fa.fai"))]
    bed = os.path.join(d, "win.bed")
    idx = None
    with open(bed, "w") as f:
        i = 0
        for name, n in lengths:
            cuts = [0, a, b, n] if name == c else [0, n]
            for s, e in zip(cuts, cuts[1:]):
                if name == c and s == a:
                    idx = i
                f.write(f"{name}\t{s}\t{e}\n")
                i += 1
    part, qc, bam = os.path.join(d, "win.part.bam"), os.path.join(d, "win.qc.json"), os.path.join(d, "win.bam")
    out = {}
    out["align"] = timed_mem([PY, "-m", "kernels.align", gf, w["R1.fastq.gz"], w["R2.fastq.gz"], "--regions", bed,
                              "--parts", part, "--qual-counts", qc, "-t", str(T), "-R", RG, "-q"],
                             label="genefarm align (window, parts)")
    vcf = os.path.join(d, "win.genefarm.vcf.gz")
    out["genefarm"] = timed_mem([PY, "-m", "kernels.call", gf, "--parts", part, "--regions-bed", bed, "--only",
                                 str(idx), "--qual-counts", qc, "-o", vcf, "-t", str(T), "-q"],
                                label="genefarm call (region task)")
    # the same reads for the peers: the part file is a BAM; samtools fixmate/sort/markdup, bcftools
    sh = (f"samtools sort -n -@ {T} -o {d}/win.n.bam {part} && samtools fixmate -m {d}/win.n.bam - | "
          f"samtools sort -@ {T} - | samtools markdup -@ {T} - {bam} && samtools index {bam}")
    out["samtools_sort_markdup"] = timed_mem(["bash", "-c", sh], label="samtools fixmate+sort+markdup")
    region = f"{c}:{a + 1}-{b}"
    bvcf = os.path.join(d, "win.bcftools.vcf.gz")
    sh = (f"bcftools mpileup --threads {T} -f {ref_fa} -r {region} -a AD,DP -Ou {bam} | "
          f"bcftools call --threads {T} -mv -Oz -o {bvcf} && tabix -f -p vcf {bvcf}")
    out["bcftools"] = timed_mem(["bash", "-c", sh], label="bcftools mpileup|call (region)")
    sh = f"bcftools view -i 'QUAL>=20' -Oz -o {d}/win.bcftools20.vcf.gz {bvcf} && tabix -f -p vcf {d}/win.bcftools20.vcf.gz"
    subprocess.run(["bash", "-c", sh], check=True)
    out["accuracy"] = {}
    for label, v in (("genefarm", vcf), ("bcftools", bvcf), ("bcftools_q20", f"{d}/win.bcftools20.vcf.gz")):
        out["accuracy"][label] = vcfcompare(shared, ref_fa, w["truth.vcf.gz"], v, label)
    return out


def _f(x, k="F1"):
    return f"{x[k]:.4f}" if x and x.get(k) is not None else "-"


def report(res):
    T = res["threads"]
    L = [f"Measured {res['date']} on {res['machine']}; every tool with {T} cores, one after the other.", ""]
    L += ["#### Index build (hs38sim: 3,367 contigs, 3.21 Gb)", "",
          "| tool | wall s | CPU s | peak RSS MB | size on disk MB | note |", "|---|---|---|---|---|---|"]
    for tool, t in res["index"].items():
        note = f"built {t['date']}, figures kept" if tool == "bwa" and t.get("date") != res["date"] else ""
        note = "; ".join(x for x in (note, t.get("note", "")) if x)

        def num(v, fmt):
            return "-" if v is None else format(v, fmt)
        L.append(f"| {tool} | {num(t['wall'], '.0f')} | {num(t['cpu'], '.0f')} | {num(t['rss_mb'], ',.0f')} | "
                 f"{t['bytes'] / 1e6:,.0f} | {note} |")
    L += ["", f"#### Alignment of {res['pairs']:,} pairs (index in the page cache)", "",
          "| tool | wall s | CPU s | reads/CPU-s | peak RSS MB | private MB | shared MB | per-rank private MB |",
          "|---|---|---|---|---|---|---|---|"]
    for tool, t in res["align"].items():
        L.append(f"| {tool} | {t['wall']:.1f} | {t['cpu']:.1f} | {t['reads_per_cpu_s']:,} | {t['rss_mb']:,.0f} | "
                 f"{t['private_mb']:,.0f} | {t['shared_mb']:,.0f} | "
                 f"{t['rank_private_mb']:,.0f} |" if tool.startswith("genefarm") else
                 f"| {tool} | {t['wall']:.1f} | {t['cpu']:.1f} | {t['reads_per_cpu_s']:,} | {t['rss_mb']:,.0f} | "
                 f"{t['private_mb']:,.0f} | {t['shared_mb']:,.0f} | |")
    L += ["", "| tool | start-up cold s | start-up warm s |", "|---|---|---|"]
    for tool, s in res["startup"].items():
        L.append(f"| {tool} | {s['cold']['wall']:.1f} | {s['warm']['wall']:.1f} |")
    L += ["", "| tool | mapped | placed within 10 bp | MAPQ>=20 | correct & MAPQ>=20 | error among MAPQ>=20 | "
              "ALT-covered: correct & MAPQ>=20 |", "|---|---|---|---|---|---|---|"]
    for tool, m in res["accuracy"].items():
        ar = res["alt_regions"][tool]
        L.append(f"| {tool} | {m['mapped']:.4f} | {m['correct']:.4f} | {m['mapq>=20']:.4f} | {m['correct@mapq>=20']:.4f} "
                 f"| {m['err@mapq>=20']:.5f} | {ar['correct_mapq20']:.4f} ({ar['reads']:,} reads) |")
    if "call" in res:
        c = res["call"]
        L += ["", "#### Calling chr6:150,000,001-155,000,000 at 30x (one region task)", "",
              "| step | wall s | CPU s | peak RSS MB |", "|---|---|---|---|"]
        for k in ("align", "genefarm", "samtools_sort_markdup", "bcftools"):
            L.append(f"| {k} | {c[k]['wall']:.1f} | {c[k]['cpu']:.1f} | {c[k]['rss_mb']:,.0f} |")
        L += ["", "| caller | SNP P | SNP R | SNP F1 | indel P | indel R | indel F1 |", "|---|---|---|---|---|---|---|"]
        for k, v in c["accuracy"].items():
            L.append(f"| {k} | {_f(v['SNP'], 'precision')} | {_f(v['SNP'], 'recall')} | {_f(v['SNP'])} | "
                     f"{_f(v['INDEL'], 'precision')} | {_f(v['INDEL'], 'recall')} | {_f(v['INDEL'])} |")
    L += ["", *target_table(targets(res))]
    return "\n".join(L)


def targets(res):
    rows = []
    gi, mi = res["index"]["genefarm"], res["index"]["minimap2"]
    rows.append(("hs38sim", "index peak RSS <= 8 GB and <= half of minimap2's",
                 gi["rss_mb"] <= 8192 and gi["rss_mb"] <= mi["rss_mb"] / 2, f"{gi['rss_mb']:,.0f} vs {mi['rss_mb']:,.0f} MB"))
    rows.append(("hs38sim", "index build <= 2x minimap2's (wall)", gi["wall"] <= 2 * mi["wall"],
                 f"{gi['wall']:.0f} vs {mi['wall']:.0f} s"))
    ga, ma = res["align"]["genefarm"], res["align"]["minimap2"]
    rows.append(("hs38sim", "alignment throughput >= minimap2's (wall, same cores)", ga["wall"] <= ma["wall"],
                 f"{ma['wall'] / ga['wall']:.2f}x ({ga['wall']:.1f} vs {ma['wall']:.1f} s)"))
    if "bwa" in res["accuracy"]:
        g, b = res["accuracy"]["genefarm"]["correct"], res["accuracy"]["bwa"]["correct"]
        rows.append(("hs38sim", "placed within 10 bp >= bwa - 0.1 pt", g >= b - 0.001, f"{g:.4f} vs {b:.4f}"))
    rk = res["align"]["genefarm_ranks"]["rank_private_mb"]
    rows.append(("hs38sim", "per-rank private RSS < 1 GB", rk < 1024, f"{rk:,.0f} MB"))
    if "call" in res:
        m = res["call"]["genefarm"]["rss_mb"]
        rows.append(("hs38sim", "a call region task of 5 Mb under 2 GB", m < 2048, f"{m:,.0f} MB"))
    return rows


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
