"""What the benchmarks share: timing a command with /usr/bin/time -v, scoring with the shared
evaluation scripts, generating the shared datasets' reads, describing the machine, and the
command line, results file and targets table of a benchmark script."""
import argparse
import compileall
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import shutil
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
VENV_BIN = os.path.dirname(PY)
RG = r"@RG\tID:bench\tSM:sample\tPL:ILLUMINA"


def machine():
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return f"{cpu} x {os.cpu_count()}, {platform.platform()}"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(cmd, out_path=None, env=None, reps=1, label=""):
    """Run cmd (a list) under /usr/bin/time -v `reps` times; median wall/cpu/rss of the runs."""
    runs = []
    for _ in range(reps):
        with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
            stdout = open(out_path, "wb") if out_path else subprocess.DEVNULL
            try:
                r = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name] + cmd, stdout=stdout,
                                   stderr=subprocess.PIPE, env=env)
            finally:
                if out_path:
                    stdout.close()
            if r.returncode != 0:
                raise SystemExit(f"{label or cmd[0]} failed ({r.returncode}):\n{r.stderr.decode()[-3000:]}")
            t = tf.read()
        m = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", t)
        wall = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        user = float(re.search(r"User time \(seconds\): ([\d.]+)", t).group(1))
        sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", t).group(1))
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
        runs.append((wall, user + sys_, rss))
        log(f"  {label}: wall {wall:.1f} s, CPU {user + sys_:.1f} s, RSS {rss:.0f} MB")
    return {"wall": statistics.median(r[0] for r in runs), "cpu": statistics.median(r[1] for r in runs),
            "rss_mb": statistics.median(r[2] for r in runs), "runs": [list(r) for r in runs]}


def mapeval(shared, truth, bam):
    r = subprocess.run([PY, os.path.join(shared, "bench", "mapeval.py"), "--truth", truth, "--bam", bam,
                        "--json", bam + ".mapeval.json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"mapeval failed on {bam}:\n{r.stderr}")
    return json.load(open(bam + ".mapeval.json"))


def ensure_data(shared, data, s):
    """s: dataset (chr20sim/chr20full), reference, reads and truth file names, regenerate.sh arguments."""
    d = os.path.join(data, s["dataset"])
    src = os.path.join(shared, "data", s["dataset"])
    need = [s["r1"], s["r2"], s["truth"]]
    if not all(os.path.exists(os.path.join(d, f)) for f in need):
        os.makedirs(d, exist_ok=True)
        log(f"generating reads into {d} (the dataset's regenerate.sh)")
        env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ["PATH"])   # mason2truth needs pysam
        subprocess.run(["bash", os.path.join(src, "scripts", "regenerate.sh")] + s["regen"] + [d], check=True, env=env)
    return {"ref": os.path.join(src, s["ref"]), **{k: os.path.join(d, s[k]) for k in ("r1", "r2", "truth")}}


def count_reads(r1):
    out = subprocess.run(f"zcat '{r1}' | wc -l", shell=True, capture_output=True, text=True, check=True).stdout
    return int(out) // 4 * 2


def dir_size(paths):
    return sum(os.path.getsize(p) for p in paths if os.path.exists(p))




def vcfcompare(shared, ref, truth, vcf, label):
    """SNP and indel figures of a VCF from the shared vcfcompare.py."""
    js = vcf + ".cmp.json"
    r = subprocess.run([PY, os.path.join(shared, "bench", "vcfcompare.py"), "--ref", ref, "--truth", truth, "--query", vcf,
                        "--json", js], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"vcfcompare failed on {label}:\n{r.stderr}")
    return json.load(open(js))


def warm_up(workdir):
    """Compile (or load from the cache) every kernel the benchmarks time, on the shipped tiny sample,
    so that no timed step pays for compilation (align_bench measures that cost on its own).
    The project's modules are byte-compiled first, as pip does for an installed package: an editable
    install is not, and where PYTHONDONTWRITEBYTECODE is set (as on the benchmark machine) Python
    would compile them from source in every process, 40 ms of each MPI rank's start-up."""
    for pkg in ("kernels", "master", "worker"):
        compileall.compile_dir(os.path.join(ROOT, pkg), quiet=1)
    tiny = os.path.join(ROOT, "tests", "data", "chr20sim")
    d = tempfile.mkdtemp(prefix="warmup-", dir=workdir)
    run = lambda *a: subprocess.run([PY, "-m", *a], check=True, capture_output=True)  # noqa: E731
    run("kernels.index", os.path.join(tiny, "ref.fa.gz"), os.path.join(d, "ix"))
    run("kernels.align", os.path.join(d, "ix"), os.path.join(tiny, "tiny_R1.fastq.gz"),
        os.path.join(tiny, "tiny_R2.fastq.gz"), "-o", os.path.join(d, "t.bam"), "-q", "--qual-counts", os.path.join(d, "q"))
    run("kernels.call", os.path.join(tiny, "ref.fa.gz"), os.path.join(d, "t.bam"), "-o", os.path.join(d, "t.vcf.gz"),
        "-q", "--bam-out", os.path.join(d, "c.bam"))
    run("kernels.markdup", os.path.join(d, "t.bam"), "-o", os.path.join(d, "m.bam"))
    subprocess.run(["rm", "-rf", d])


def bench_args(doc, sets, out_name):
    """The options every benchmark script takes; add its own, then run_sets()."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=sets, help=f"comma-separated data sets (default {sets})")
    ap.add_argument("--threads", type=int, default=2, help="cores given to every tool (default 2)")
    ap.add_argument("--data", default=os.path.join(ROOT, "benchmarks", "data"), help="where generated reads go")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"), help="the shared data and tools")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", out_name), help="work files and report")
    return ap


def run_sets(a, tools, bench_set, report, before=None):
    """Check the peer tools, run bench_set(name) for each set (results.json saved after each),
    write OUT/report.md and print it. before(res) runs first (compile timing, warm-up)."""
    for tool in tools + ("/usr/bin/time", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make apt-bench` first")
    os.makedirs(a.out, exist_ok=True)
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": a.threads,
           "sets": {}}
    if before:
        before(res)
    for name in a.sets.split(","):
        res["sets"][name] = bench_set(name)
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(res, f, indent=1)
    text = report(res, a.threads)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)


def target_table(rows):
    """Markdown lines of (set, target, ok, measured) rows."""
    return ["| set | target | result | measured |", "|---|---|---|---|"] + \
        [f"| {name} | {what} | {'PASS' if ok else 'FAIL'} | {detail} |" for name, what, ok, detail in rows]
