#!/usr/bin/env python3
"""The master alone at 30x-genome scale: the real planner, store and engine driving a run of 400
million pairs on hs38sim (GRCh38's shape), its tasks run by a stub backend that writes the outputs
each task would (the right names and sizes, as sparse files) and the worker's report. Used only
in this benchmark: it measures the master, not the kernels.

    python benchmarks/master_scale_bench.py [--pairs 400000000] [--db sqlite,postgres] [--index PREFIX]
                                            [--out benchmarks/out/master-scale]

Prints, per store: the plan (tasks per stage), time per poll (median, 95th percentile, max) while
each stage runs, the master's peak RSS, the store's size, the time to create and to submit each
stage's tasks, and the files per stage in the work directory. The index's contigs come from a
genefarm index of hs38sim (benchmarks/out/scale/gf by default: scale_bench.py builds it).
"""
import argparse
import gzip
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from master import settings as settings_mod  # noqa: E402
from master.backends.base import Backend, JobStatus  # noqa: E402
from master.engine import Engine  # noqa: E402
from master.states import JobState  # noqa: E402
from master.store import Reference, Run, open_store  # noqa: E402
from worker.message import write_json_atomic  # noqa: E402
from worker.contract import DONE_MARKER  # noqa: E402

# sizes of a 30x genome's outputs (bytes; from the measured runs, BENCHMARKS.md)
PART_BYTES_PER_PAIR = 150          # a part file: 2 records of ~330 B at BGZF level 1 ratio ~2.2
REGION_BAM_BYTES_PER_PAIR = 110
CHUNK_FASTQ_BYTES_PER_PAIR = 190


def sparse(path, size):
    with open(path, "wb") as f:
        f.truncate(int(size))


class StubBackend(Backend):
    """Runs every element at once: writes its outputs (sparse files of the sizes a 30x run has)
    and its report, as the worker would; the job is done at the next status call."""
    name = "stub"

    def __init__(self, index_prefix, per_poll):
        import concurrent.futures
        self.index_prefix = os.path.abspath(index_prefix)
        self.jobs = {}
        self.n = 0
        # the jobs' own work (their outputs and reports) happens off the master's loop, as on nodes
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.ran = {}
        self.done = set()
        self.per_poll = per_poll          # jobs that end per status call (as many as a real farm's would)

    def submit(self, spec):
        ids = []
        for i in range(1, spec.count + 1):
            with open(os.path.join(spec.manifest, f"{i}.json")) as f:
                msg = json.load(f)
            self.n += 1
            jid = f"stub{self.n}"
            self.jobs[jid] = msg
            self.ran[jid] = self.pool.submit(self._run, msg)
            ids.append(jid)
        return ids

    def _run(self, msg):
        out = msg["outputs"]["out"]
        os.makedirs(out, exist_ok=True)
        st, p = msg["stage"], msg["params"]
        result = {}
        if st == "index":
            for f in os.listdir(os.path.dirname(self.index_prefix)):
                if f.startswith(os.path.basename(self.index_prefix) + ".gfi."):
                    os.symlink(os.path.join(os.path.dirname(self.index_prefix), f),
                               os.path.join(out, "ref" + f[len(os.path.basename(self.index_prefix)):]))
        elif st == "split":
            total = int(msg["params"].get("stub_pairs") or os.environ["GF_STUB_PAIRS_PER_LANE"])
            n = -(-total // int(p["pairs"]))
            chunks = []
            for c in range(n):
                pairs = min(int(p["pairs"]), total - c * int(p["pairs"]))
                for m in ("R1", "R2"):
                    sparse(os.path.join(out, f"chunk.c{c:04d}_{m}.fastq.gz"), pairs * CHUNK_FASTQ_BYTES_PER_PAIR)
                chunks.append({"index": c, "r1": os.path.join(out, f"chunk.c{c:04d}_R1.fastq.gz"),
                               "r2": os.path.join(out, f"chunk.c{c:04d}_R2.fastq.gz"),
                               "first_pair": c * int(p["pairs"]), "pairs": pairs})
            result = {"pairs": total, "chunks": chunks, "seconds": 1.0}
        elif st == "align":
            sparse(os.path.join(out, "part.bam"), int(p.get("stub_pairs", 2_000_000)) * PART_BYTES_PER_PAIR)
            for f in ("part.bam.groups.npy", "part.bam.blocks.npy", "part.bam.parts.json", "qual-counts.json"):
                sparse(os.path.join(out, f), 20_000)
        elif st == "call":
            sparse(os.path.join(out, "region.bam"), 200_000 * REGION_BAM_BYTES_PER_PAIR)
            for f in ("region.bam.bai", "region.vcf.gz", "region.vcf.gz.tbi"):
                sparse(os.path.join(out, f), 50_000)
        elif st == "gather":
            for f in ("s.bam", "s.bam.bai", "s.vcf.gz", "s.vcf.gz.tbi", "s.qc.json"):
                sparse(os.path.join(out, f), 1000)
            result = {"reads": 800_000_000, "variants": 4_500_000}
        write_json_atomic(os.path.join(out, DONE_MARKER), {"task": msg["task"]})
        write_json_atomic(os.path.join(msg["report"], "report.json"),
                          {"task": msg["task"], "attempt": msg["attempt"], "stage": st, "outcome": "done",
                           "exit_code": 0, "message": "", "node": "stub", "started": time.time(),
                           "ended": time.time(), "cpu_seconds": 1.0, "peak_mb": 100.0, "result": result,
                           "outputs": msg["outputs"], "memory": {"limit_mb": 0, "exceeded": False}})

    def status(self, ids):
        out = {}
        ended = 0
        for jid in ids:
            msg = self.jobs.get(jid)
            if msg is None:
                out[jid] = JobStatus(JobState.UNKNOWN)
                continue
            if jid not in self.done:
                if ended >= self.per_poll:
                    out[jid] = JobStatus(JobState.RUNNING, node="stub", raw="running")
                    continue
                self.ran[jid].result()
                self.done.add(jid)
                ended += 1
            out[jid] = JobStatus(JobState.DONE, 0, None, "stub", 1.0, 100.0, raw="done")
        return out

    def cancel(self, ids):
        pass


def fake_lane(d, name, pairs, src_r1):
    """A FASTQ pair whose first megabytes are real (the chunk size is estimated from them) and the
    rest sparse, for a lane of `pairs` pairs."""
    paths = []
    for m in ("R1", "R2"):
        p = os.path.join(d, f"{name}_{m}.fastq.gz")
        with gzip.open(src_r1, "rb") as f:
            head = f.read(16 << 20)
        with open(p, "wb") as g:
            g.write(gzip.compress(head, 6))
            g.truncate(int(pairs * 88))
        paths.append(p)
    return paths


def drive(eng, Session, rid, label, ticks):
    """Tick until the run ends; record each tick's seconds with the stage running. Once the call
    stage runs, 10 polls where no job ends are timed apart ("call, idle"): what a poll costs when
    nothing changed, whatever the run's size."""
    idle_done = False
    while True:
        with Session() as db:
            run = db.get(Run, rid)
            if run.state != "running":
                return run.state
            stage = max((t.stage for t in run.tasks if t.state in ("queued", "running", "ready")),
                        key=["index", "split", "align", "call", "gather"].index, default="plan")
        if stage == "call" and not idle_done and eng.backend.done:
            idle_done = True
            keep, eng.backend.per_poll = eng.backend.per_poll, 0
            for _ in range(10):
                t0 = time.perf_counter()
                eng.tick()
                ticks.append(("call, idle", time.perf_counter() - t0))
            eng.backend.per_poll = keep
        t0 = time.perf_counter()
        if PROFILE is not None:
            PROFILE.enable()
        eng.tick()
        if PROFILE is not None:
            PROFILE.disable()
        ticks.append((stage, time.perf_counter() - t0))


def one(db_kind, a, out):
    home = tempfile.mkdtemp(prefix=f"gf-master-{db_kind}-", dir=out)
    pg = None
    if db_kind == "postgres":
        import gf_daemons
        pg = gf_daemons.postgres_url.__wrapped__()
        url = next(pg)
    else:
        url = ""
    env = {"GENEFARM_HOME": home, "GENEFARM_BACKEND": "local"}
    if url:
        env["GENEFARM_DB_URL"] = url
    os.environ.update(env)
    s = settings_mod.load(home)
    s.max_queued = a.max_queued
    eng_db, Session = open_store(s.db_url)
    backend = StubBackend(a.index, a.per_poll)
    eng = Engine(s, Session, backend)
    from master import planner
    contigs = planner.contigs_of_index(a.index)
    lanes = []
    per_lane = a.pairs // a.lanes
    os.environ["GF_STUB_PAIRS_PER_LANE"] = str(per_lane)
    d = os.path.join(home, "fastq")
    os.makedirs(d)
    for i in range(a.lanes):
        r1, r2 = fake_lane(d, f"s_L{i + 1:03d}", per_lane, a.reads)
        lanes.append({"id": f"L{i + 1:03d}", "r1": r1, "r2": r2})
    timings = {}
    with Session() as db:
        ref = Reference(name="hs38sim", uri=os.path.abspath(a.index), sha256="0" * 64, contigs=len(contigs),
                        bases=sum(c.weight for c in contigs), layout=planner.layout_of(contigs))
        db.add(ref)
        db.commit()
        from master import service
        t0 = time.perf_counter()
        smp, run = service.submit_sample(db, s, {"name": "s30x", "reference": "hs38sim", "lanes": lanes})
        timings["submit"] = time.perf_counter() - t0
        rid = run.id
    ticks = []
    t0 = time.perf_counter()
    state = drive(eng, Session, rid, db_kind, ticks)
    wall = time.perf_counter() - t0
    with Session() as db:
        run = db.get(Run, rid)
        tasks = {}
        for t in run.tasks:
            tasks[t.stage] = tasks.get(t.stage, 0) + 1
        plan = run.summary.get("plan", {})
    size = os.path.getsize(s.db_path) if not url else _pg_size(eng_db)
    files = {}
    work = os.path.join(home, "work")
    for st in os.listdir(work):
        files[st] = sum(len(fs) for _, _, fs in os.walk(os.path.join(work, st)))
    by_stage = {}
    for st, secs in ticks:
        by_stage.setdefault(st, []).append(secs)
    res = {"db": db_kind, "state": state, "wall_s": round(wall, 1), "tasks": tasks, "ticks": len(ticks),
           "pairs": plan.get("pairs"), "store_mb": round(size / 1e6, 1),
           "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "files": files,
           "submit_s": round(timings["submit"], 2),
           "poll_s": {st: {"median": round(statistics.median(v), 4), "p95": round(sorted(v)[max(0, -(-95 * len(v) // 100) - 1)], 4),
                           "max": round(max(v), 4), "n": len(v)} for st, v in by_stage.items()}}
    if pg is not None:
        eng_db.dispose()
        try:
            next(pg)
        except StopIteration:
            pass
    shutil.rmtree(home, ignore_errors=True)
    return res


def _pg_size(eng):
    from sqlalchemy import text
    with eng.connect() as c:
        return c.execute(text("select pg_database_size(current_database())")).scalar()


PROFILE = None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=400_000_000)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--max-queued", type=int, default=200)
    ap.add_argument("--per-poll", type=int, default=10,
                    help="jobs that end between two polls (default 10: 200 running call tasks of ~40 s, "
                         "polled every 2 s)")
    ap.add_argument("--profile", action="store_true", help="cProfile the ticks (to OUT/ticks.prof)")
    ap.add_argument("--index", default=os.path.join(ROOT, "benchmarks", "out", "scale", "gf"))
    ap.add_argument("--reads", default=os.path.join(ROOT, "benchmarks", "data", "hs38sim", "sub_R1.fastq.gz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "master-scale"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    global PROFILE
    if a.profile:
        import cProfile
        PROFILE = cProfile.Profile()
    results = []
    for kind in a.db.split(","):
        print(f"== {kind}", file=sys.stderr, flush=True)
        results.append(one(kind, a, a.out))
        print(json.dumps(results[-1], indent=1), file=sys.stderr, flush=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if PROFILE is not None:
        PROFILE.dump_stats(os.path.join(a.out, "ticks.prof"))
    for r in results:
        print(f"#### {r['db']}: {r['pairs']:,} pairs, tasks {r['tasks']}, run {r['state']} in {r['wall_s']} s "
              f"({r['ticks']} polls)")
        print("| stage | polls | poll median s | p95 s | max s |\n|---|---|---|---|---|")
        for st, v in r["poll_s"].items():
            print(f"| {st} | {v['n']} | {v['median']:.4f} | {v['p95']:.4f} | {v['max']:.4f} |")
        print(f"\nmaster peak RSS {r['rss_mb']:,.0f} MB; store {r['store_mb']:,.1f} MB; submit {r['submit_s']} s; "
              f"files per stage {r['files']}\n")


if __name__ == "__main__":
    main()
