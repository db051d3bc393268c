"""Large arrays through the master's scheduler backends: time to submit, time until every element
is seen finished, and the cost of one status poll (what the poller pays per cycle).

    python benchmarks/array_bench.py [--tasks 1000] [--backends sge,drmaa,slurm] [--slots N]

Starts a private single-host SGE cell and Slurm cluster with the same bootstrap scripts the
tests and bcc use (images/sge, images/slurm; free ports, stopped by PID afterwards), submits one
array of N elements running /bin/true through each backend (the same submit/status calls the
poller makes), and polls status(all ids) once a second until every element is finished.
Prints one JSON line per backend and a table. Run it on an otherwise idle machine.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

JEMALLOC = "/lib/x86_64-linux-gnu/libjemalloc.so.2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def source(path):
    env = {}
    for line in open(path):
        if line.startswith("export "):
            k, _, v = line[7:].strip().partition("=")
            env[k] = v
    return env


def measure(backend, n, workdir):
    """In this process: submit one array of n /bin/true, poll until all finished."""
    from master import settings as settings_mod
    from master.backends import ArraySpec, get_backend
    from master.states import JOB_FINISHED
    s = settings_mod.load(os.path.join(workdir, "home"), backend=backend)
    b = get_backend(s)
    m = os.path.join(workdir, f"arr-{backend}")
    os.makedirs(m, exist_ok=True)
    spec = ArraySpec(name=f"gfbench{backend}", count=n, argv=["/bin/true"], manifest=m,
                     log_dir=os.path.join(workdir, "logs"))
    t0 = time.perf_counter()
    ids = b.submit(spec)
    t_submit = time.perf_counter() - t0
    polls = []
    states = {}
    while True:
        p0 = time.perf_counter()
        st = b.status(ids)
        polls.append(time.perf_counter() - p0)
        states = {}
        for v in st.values():
            states[v.state.value] = states.get(v.state.value, 0) + 1
        if all(v.state in JOB_FINISHED for v in st.values()):
            break
        if time.perf_counter() - t0 > 3600:
            break
        time.sleep(1.0)
    t_all = time.perf_counter() - t0
    b.close()
    return {"backend": b.name, "tasks": n, "submit_s": round(t_submit, 3), "all_finished_s": round(t_all, 1),
            "polls": len(polls), "poll_median_s": round(statistics.median(polls), 3),
            "poll_max_s": round(max(polls), 3), "final_states": states}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--backends", default="sge,drmaa,slurm")
    ap.add_argument("--slots", type=int, default=os.cpu_count(),
                    help="slots of the SGE queue and CPUs of the Slurm node (more than the cores: overcommitted)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:                       # child mode: one backend, in a process with the right environment
        print(json.dumps(measure(a.one, a.tasks, a.workdir)))
        return 0
    want = a.backends.split(",")
    results = []
    work = tempfile.mkdtemp(prefix="gf-arraybench-")
    os.chmod(work, 0o755)           # munged (its own user) must reach the Slurm state directory
    try:
        if {"sge", "drmaa"} & set(want):
            state = os.path.join(work, "sge")
            script = os.path.join(ROOT, "images", "sge", "bootstrap.sh")
            cell = f"gfb{os.getpid()}"
            subprocess.run([script, "start", "--state", state, "--cell", cell, "--qmaster-port", str(free_port()),
                            "--execd-port", str(free_port()), "--slots", str(a.slots)], check=True)
            try:
                env = dict(os.environ, **source(os.path.join(state, "sge.env")))
                for be in [x for x in want if x in ("sge", "drmaa")]:
                    e = dict(env, LD_PRELOAD=JEMALLOC) if be == "drmaa" else env
                    out = subprocess.run([sys.executable, __file__, "--one", be, "--tasks", str(a.tasks),
                                          "--workdir", work], env=e, capture_output=True, text=True, check=True)
                    results.append(json.loads(out.stdout))
                    print(out.stdout.strip(), flush=True)
            finally:
                subprocess.run([script, "stop", "--state", state, "--cell", cell])
        if "slurm" in want:
            state = os.path.join(work, "slurm")
            os.makedirs(state)
            script = os.path.join(ROOT, "images", "slurm", "bootstrap.sh")
            subprocess.run([script, "start", "--state", state, "--cluster", f"gfb{os.getpid()}",
                            "--ctld-port", str(free_port()), "--slurmd-port", str(free_port()),
                            "--cpus", str(a.slots)] + (["--overcommit"] if a.slots > os.cpu_count() else []),
                           check=True)
            try:
                env = dict(os.environ, **source(os.path.join(state, "slurm.env")))
                out = subprocess.run([sys.executable, __file__, "--one", "slurm", "--tasks", str(a.tasks),
                                      "--workdir", work], env=env, capture_output=True, text=True, check=True)
                results.append(json.loads(out.stdout))
                print(out.stdout.strip(), flush=True)
            finally:
                subprocess.run([script, "stop", "--state", state])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'backend':<8} {'tasks':>6} {'submit s':>9} {'all seen finished s':>20} {'poll median s':>14} "
          f"{'poll max s':>11}")
    for r in results:
        print(f"{r['backend']:<8} {r['tasks']:>6} {r['submit_s']:>9.3f} {r['all_finished_s']:>20.1f} "
              f"{r['poll_median_s']:>14.3f} {r['poll_max_s']:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
