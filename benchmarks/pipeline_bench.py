"""One sample through the whole master pipeline on the local backend, against the peer tools.

    python benchmarks/pipeline_bench.py [--r1 R1 --r2 R2 --ref REF] [--cores 2] [--regions K] [--chunk-pairs N]

1. genefarm: `genefarm run` (embedded master, SQLite, local backend with --cores slots, tasks of
   --cores threads, so one task runs at a time on all the cores) in a fresh GENEFARM_HOME. Reports
   the wall time of the whole run, the sum of the kernels' own times (each kernel's JSON "seconds",
   or its attempt's wall time when the kernel gives none) and the difference: the master's
   overhead (scheduling, polling, staging, process start-up). The numba cache is warmed first on
   the shipped tiny sample, so compiling is not counted.
2. peers on the same cores: bwa index; bwa mem -t C | samtools fixmate -m | samtools sort -@C;
   samtools markdup -@C; samtools index; bcftools mpileup | bcftools call -mv -Oz; tabix.
Prints a table and one JSON line. Default data: benchmarks/data/chr20sim/bench_R1/R2 (400,000
pairs, about 30x of the 4 Mb chr20sim reference). Run it on an otherwise idle machine.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def sh(cmd, env=None):
    t0 = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def genefarm(r1, r2, ref, cores, regions, chunk_pairs, work, name):
    home = os.path.join(work, f"home-{name}")
    env = dict(os.environ, GENEFARM_HOME=home, GENEFARM_LOCAL_SLOTS=str(cores), GENEFARM_THREADS=str(cores),
               GENEFARM_POLL_SECONDS="0.5", PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "master.cli", "run", r1, r2, "--reference", ref, "--name", name, "--json"]
    if regions:
        cmd += ["--regions", str(regions)]
    if chunk_pairs:
        cmd += ["--chunk-pairs", str(chunk_pairs)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"genefarm run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout)
    from sqlalchemy import select

    from master.store import Attempt, Task, open_store
    _, Session = open_store(f"sqlite:///{home}/genefarm.db")
    per_stage = {}
    with Session() as db:
        for t in db.scalars(select(Task).where(Task.run_id == res["id"])):
            done = [a for a in db.scalars(select(Attempt).where(Attempt.task_id == t.id)) if a.end_reason == "done"]
            own = (t.result or {}).get("seconds")
            if isinstance(own, dict):            # per-phase times: their total
                own = own.get("total") or sum(v for v in own.values() if isinstance(v, (int, float)))
            if own is None and done:
                own = done[0].wall_seconds or 0.0
            s = per_stage.setdefault(t.stage, {"tasks": 0, "kernel_s": 0.0, "core_s": 0.0, "attempt_s": 0.0})
            s["tasks"] += 1
            s["kernel_s"] += own or 0.0
            s["core_s"] += sum(a.cpu_seconds or 0.0 for a in done)
            s["attempt_s"] += sum(a.wall_seconds or 0.0 for a in done)
    return {"wall_s": wall, "run_wall_s": res["summary"]["wall_seconds"], "stages": per_stage,
            "kernel_sum_s": sum(s["kernel_s"] for s in per_stage.values()), "qc": res["summary"]["qc"]}


def peers(r1, r2, ref, cores, work):
    d = os.path.join(work, "peers")
    os.makedirs(d)
    fa = os.path.join(d, "ref.fa")
    sh(f"zcat -f {ref} > {fa} && samtools faidx {fa}")
    t = {}
    t["bwa index"] = sh(f"bwa index {fa}")
    t["bwa mem | fixmate | sort"] = sh(
        f"bwa mem -t {cores} -R '@RG\\tID:b\\tSM:b' {fa} {r1} {r2} | samtools fixmate -m - - "
        f"| samtools sort -@ {cores} -o {d}/sorted.bam -")
    t["samtools markdup + index"] = sh(f"samtools markdup -@ {cores} {d}/sorted.bam {d}/md.bam && "
                                       f"samtools index {d}/md.bam")
    t["bcftools mpileup | call + tabix"] = sh(
        f"bcftools mpileup --threads {cores} -f {fa} {d}/md.bam | bcftools call --threads {cores} -mv -Oz "
        f"-o {d}/calls.vcf.gz && tabix -p vcf {d}/calls.vcf.gz")
    n = int(subprocess.run(f"zcat {d}/calls.vcf.gz | grep -vc '^#'", shell=True, capture_output=True,
                           text=True).stdout.strip() or 0)
    return t, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = os.path.join(ROOT, "benchmarks", "data", "chr20sim")
    ap.add_argument("--r1", default=os.path.join(data, "bench_R1.fastq.gz"))
    ap.add_argument("--r2", default=os.path.join(data, "bench_R2.fastq.gz"))
    ap.add_argument("--ref", default=os.path.join(ROOT, "tests", "data", "chr20sim", "ref.fa.gz"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--regions", type=int, default=0, help="call shards (default 0: the planner's, sized by the reads)")
    ap.add_argument("--chunk-pairs", type=int, default=0,
                    help="pairs per align chunk (default 0: the planner's, sized by the input)")
    ap.add_argument("--skip-peers", action="store_true")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"pipeline_bench: warning: load average {load:.2f}; the figures will be slower than they should",
              file=sys.stderr)
    work = tempfile.mkdtemp(prefix="gf-pipebench-")
    try:
        tiny = os.path.join(ROOT, "tests", "data", "chr20sim")
        genefarm(os.path.join(tiny, "tiny_R1.fastq.gz"), os.path.join(tiny, "tiny_R2.fastq.gz"), a.ref, a.cores,
                 a.regions, 5000, work, "warmup")                     # numba cache warm
        g = genefarm(a.r1, a.r2, a.ref, a.cores, a.regions, a.chunk_pairs, work, "bench")
        p, nvar = ({}, 0) if a.skip_peers else peers(a.r1, a.r2, a.ref, a.cores, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ngenefarm on the local backend, {a.cores} cores, "
          f"{a.regions or 'the planned'} regions, chunks of {a.chunk_pairs or 'the planned'} pairs")
    print(f"  {'stage':<8} {'tasks':>5} {'kernel s':>9} {'attempt s':>10} {'per-task fixed s':>17} {'core s':>8}")
    for st in ("index", "split", "align", "call", "gather"):
        s = g["stages"].get(st)
        if s:
            fixed = (s["attempt_s"] - s["kernel_s"]) / max(1, s["tasks"])
            print(f"  {st:<8} {s['tasks']:>5} {s['kernel_s']:>9.1f} {s['attempt_s']:>10.1f} {fixed:>17.2f} "
                  f"{s['core_s']:>8.1f}")
    over = g["wall_s"] - g["kernel_sum_s"]
    attempts = sum(s["attempt_s"] for s in g["stages"].values())
    print(f"  whole run (genefarm run, wall)   {g['wall_s']:8.1f} s")
    print(f"  sum of the kernels' own times    {g['kernel_sum_s']:8.1f} s")
    print(f"  overhead (wall - kernels)        {over:8.1f} s ({100 * over / g['wall_s']:.0f}%)")
    print(f"  ... inside the tasks' attempts   {attempts - g['kernel_sum_s']:8.1f} s (worker and kernel start-up, "
          f"staging)")
    print(f"  ... outside any attempt          {g['wall_s'] - attempts:8.1f} s (the master's start, scheduling "
          f"gaps, when tasks run one at a time)")
    print(f"  reads {g['qc'].get('reads', 0):,}, mapped {100 * g['qc'].get('mapping_rate', 0):.2f}%, "
          f"duplicates {g['qc'].get('duplicates', 0):,}, variants {g['qc'].get('variants', 0):,}")
    if p:
        print(f"\npeers on {a.cores} cores")
        for k, v in p.items():
            print(f"  {k:<32} {v:8.1f} s")
        tot = sum(p.values())
        print(f"  total                            {tot:8.1f} s ({nvar:,} variants)")
        print(f"  genefarm / peers                 {g['wall_s'] / tot:8.2f}x "
              f"(without indexing: {(g['wall_s'] - g['stages']['index']['kernel_s']) / (tot - p['bwa index']):.2f}x)")
    print(json.dumps({"genefarm": g, "peers": p, "peer_variants": nvar, "load_before": load}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
