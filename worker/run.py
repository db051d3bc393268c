"""Run one task on a node: stage inputs in, run the kernel, deliver the outputs, report.

    python -m worker run MESSAGE.json
    python -m worker run --array DIR      (array job: DIR/<index>.json, the index from SGE_TASK_ID,
                                           SLURM_ARRAY_TASK_ID or GENEFARM_ARRAY_INDEX)

Exit codes (DESIGN.md): 0 done; 2 bad input (not retried: a missing or unreadable input, a
kernel's exit 2, a message this worker cannot read); 75 temporary (retried: storage unreachable,
a kernel's exit 75); 1 the kernel failed otherwise (retried up to the limit); 143 preempted
(SIGTERM: the kernel is stopped, nothing is delivered, the task is requeued without spending a
retry). While it runs the worker rewrites REPORT/heartbeat.json every few seconds; at the end it
writes REPORT/report.json once (a second worker for the same (task, attempt) keeps the first).
Outputs are filled in a directory of their own and delivered whole (one rename on a shared
filesystem, an upload to an object store), so a half-made output never looks finished.
"""
import argparse
import collections
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from worker import stages, storage
from worker.contract import DONE_MARKER, EXIT, Memory, Outcome, Report, outcome_of_kernel
from worker.contract import read_report as read_report_obj
from worker.message import MessageError, load, write_json_atomic
HEARTBEAT_SECONDS = float(os.environ.get("GENEFARM_HEARTBEAT_SECONDS", "10"))
MEMORY_POLL_SECONDS = 0.2
OOM_SHARE = 0.9          # a kernel SIGKILLed by someone else near its limit was killed for memory


def log(msg):
    print(f"genefarm-worker: {msg}", file=sys.stderr, flush=True)


class Worker:
    def __init__(self, msg):
        self.msg = msg
        self.node = socket.gethostname()
        self.child = None
        self.preempted = False
        self.phase = "starting"
        self.started = time.time()
        self._stop = threading.Event()
        self.tail = collections.deque(maxlen=20)
        # memory: what the task asked for (per rank, times its ranks), the kernel's peak private
        # memory seen, and (used, limit) when the worker stopped it for going over
        r = msg.resources or {}
        self.mem_limit = int(r.get("memory_mb", 0) or 0) * max(1, int(r.get("ranks", 1) or 1))
        self.mem_peak = 0.0
        self.mem_over = None

    # ---------------------------------------------------------------- signals, heartbeats
    def _on_term(self, signum, _frame):
        self.preempted = True
        log(f"got signal {signum}: stopping the kernel, the task will be requeued (preempted)")
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signal.SIGTERM)
            except OSError:
                pass

    def _watch_memory(self):
        """Follow the kernel's private memory; past the task's request, stop it (SIGKILL to its
        processes): the attempt then fails saying so, and is retried with more."""
        child = self.child
        while child.poll() is None:
            used = _private_mb(_tree(child.pid))
            self.mem_peak = max(self.mem_peak, used)
            if self.mem_limit and used > self.mem_limit and self.mem_over is None:
                self.mem_over = (used, self.mem_limit)
                log(f"the kernel uses {used:,.0f} MB, more than the {self.mem_limit:,} MB the task asked for: "
                    f"stopping it")
                for p in reversed(_tree(child.pid)):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                return
            time.sleep(MEMORY_POLL_SECONDS)

    def _heartbeat(self):
        while not self._stop.is_set():
            try:
                write_json_atomic(os.path.join(self.msg.report, "heartbeat.json"),
                                  {"task": self.msg.task, "attempt": self.msg.attempt, "node": self.node,
                                   "pid": os.getpid(), "at": time.time(), "phase": self.phase,
                                   "started": self.started})
            except OSError as e:
                log(f"cannot write the heartbeat ({e})")
            self._stop.wait(HEARTBEAT_SECONDS)

    # ---------------------------------------------------------------- the task
    def run(self):
        m = self.msg
        existing = read_report_obj(m.report)
        if existing is not None:
            log(f"task {m.task} attempt {m.attempt} was already reported ({existing.outcome}); nothing to do")
            return EXIT.get(Outcome(existing.outcome), 1) if existing.outcome in set(o.value for o in Outcome) else 1
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        hb = threading.Thread(target=self._heartbeat, daemon=True)
        hb.start()
        scratch = tempfile.mkdtemp(prefix=f"gf-t{m.task}a{m.attempt}-", dir=os.environ.get("GENEFARM_SCRATCH"))
        result, outcome, message = {}, "failed", ""
        try:
            outcome, message, result = self._run(scratch)
        except storage.StorageError as e:
            outcome = "temporary" if e.kind == "temporary" else "bad_input"
            message = str(e)
        except Exception as e:  # noqa: BLE001  (any crash is reported, not lost)
            outcome, message = "failed", f"worker error: {type(e).__name__}: {e}"
        finally:
            self._stop.set()
            shutil.rmtree(scratch, ignore_errors=True)
        if self.preempted and outcome != "done":
            outcome, message = "preempted", "stopped by SIGTERM (preempted); requeued without spending a retry"
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        outcome = Outcome(outcome)
        report = Report(task=m.task, attempt=m.attempt, stage=m.stage, outcome=outcome.value, exit_code=EXIT[outcome],
                        message=message, node=self.node, started=self.started, ended=time.time(),
                        cpu_seconds=round(ru.ru_utime + ru.ru_stime, 3), peak_mb=round(ru.ru_maxrss / 1024, 1),
                        memory=Memory(self.mem_limit, round(self.mem_peak, 1), self.mem_over is not None),
                        result=result, outputs=m.outputs if outcome == Outcome.DONE else {})
        if not write_json_atomic(os.path.join(m.report, "report.json"), report.to_dict(), exclusive=True):
            log("another worker already reported this attempt; keeping its report")
        if m.notify:
            try:
                os.makedirs(m.notify, exist_ok=True)
                open(os.path.join(m.notify, f"{m.task}.{m.attempt}"), "w").close()
            except OSError as e:
                log(f"cannot tell the master in {m.notify} ({e}); it finds the report on its next poll")
        log(f"task {m.task} ({m.key}) attempt {m.attempt}: {outcome.value}" + (f": {message}" if message else ""))
        return EXIT[outcome]

    def _stage_in(self, scratch):
        self.phase = "staging-in"
        local = {}
        for name, v in self.msg.inputs.items():
            if isinstance(v, dict) and "manifest" in v:
                # many inputs named by one file (the master writes it once per stage): its list
                with open(storage.fetch(v["manifest"], scratch, f"{name}-manifest.json")) as f:
                    v = json.load(f)["uris"]
            if isinstance(v, (list, tuple)):
                local[name] = [storage.fetch(u, scratch, f"{name}-{i}-" + os.path.basename(u.rstrip("/")))
                               for i, u in enumerate(v)]
            else:
                local[name] = storage.fetch(v, scratch, f"{name}-" + os.path.basename(v.rstrip("/")))
        return local

    def _run(self, scratch):
        m = self.msg
        mod = stages.kernel_module(m.stage)
        if importlib.util.find_spec(mod) is None:
            return ("bad_input", f"this node's genefarm has no {mod} (stage {m.stage}): install a genefarm "
                                 f"with that kernel on the node", {})
        inputs = self._stage_in(scratch)
        out_uri = m.outputs["out"]
        if storage.is_remote(out_uri):
            out_dir = os.path.join(scratch, "out")
        else:
            final = storage.local_path(out_uri)
            out_dir = f"{final}.partial-t{m.task}a{m.attempt}"
            shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir, exist_ok=True)
        argv = stages.command(m, inputs, out_dir, scratch)
        self.phase = "running"
        log(f"task {m.task} ({m.key}) attempt {m.attempt} on {self.node}: {' '.join(argv)}")
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, m.cpus)))
        if self.preempted:
            return "preempted", "", {}
        self.child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        watch = threading.Thread(target=self._watch_memory, daemon=True)
        watch.start()
        out_chunks = []
        t_out = threading.Thread(target=lambda: out_chunks.append(self.child.stdout.read()), daemon=True)
        t_out.start()
        for line in iter(self.child.stderr.readline, b""):
            text = line.decode(errors="replace").rstrip("\n")
            self.tail.append(text)
            print(text, file=sys.stderr, flush=True)
        rc = self.child.wait()
        t_out.join()
        why = "; ".join(x for x in list(self.tail)[-3:] if x.strip())
        oom = self.mem_over is not None or (rc == -signal.SIGKILL and not self.preempted and self.mem_limit
                                             and self.mem_peak >= OOM_SHARE * self.mem_limit)
        if oom:
            shutil.rmtree(out_dir, ignore_errors=True)
            who = "the worker stopped it" if self.mem_over else "the system's out-of-memory killer stopped it"
            used, limit = self.mem_over or (self.mem_peak, self.mem_limit)
            self.mem_over = (used, limit)
            return "failed", (f"killed for memory: used {used:,.0f} of {limit:,} MB asked for ({who}); "
                              f"the master retries it once with more memory"), {}
        if self.preempted or rc < 0:
            shutil.rmtree(out_dir, ignore_errors=True)
            sig = -rc if rc < 0 else signal.SIGTERM
            return "preempted", f"kernel stopped by signal {sig}", {}
        if rc != 0:
            shutil.rmtree(out_dir, ignore_errors=True)
            kind = outcome_of_kernel(rc).value
            return kind, f"{mod} exited {rc}: {why}" if why else f"{mod} exited {rc}", {}
        result = _last_json(b"".join(out_chunks).decode(errors="replace"))
        self.phase = "staging-out"
        write_json_atomic(os.path.join(out_dir, DONE_MARKER),
                          {"task": m.task, "attempt": m.attempt, "stage": m.stage, "key": m.key, "result": result})
        if self.preempted:
            shutil.rmtree(out_dir, ignore_errors=True)
            return "preempted", "stopped by SIGTERM before delivery", {}
        storage.put(out_dir, out_uri)
        return "done", "", result


def _tree(pid):
    """pid and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def _private_mb(pids):
    """Private (anonymous) resident memory of the processes, in MB: the memory-mapped index and
    reference are page cache shared by every task, not the task's own."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for ln in f:
                    if ln.startswith("RssAnon:"):
                        total += int(ln.split()[1])
                        break
        except OSError:
            pass
    return total / 1024


def _last_json(text):
    """The kernel's JSON summary: the last JSON object printed on stdout."""
    text = text.strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        pass
    start = text.rfind("\n{")
    try:
        return json.loads(text[start + 1:] if start >= 0 else text)
    except ValueError:
        return {"stdout": text[-2000:]}


def array_index():
    for v in ("GENEFARM_ARRAY_INDEX", "SGE_TASK_ID", "SLURM_ARRAY_TASK_ID"):
        x = os.environ.get(v, "")
        if x.isdigit():
            return int(x)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m worker", description="Run one genefarm task on this node.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a task message")
    r.add_argument("message", nargs="?", help="the task message (JSON)")
    r.add_argument("--array", help="array manifest directory: runs DIR/<index>.json")
    r.add_argument("--index", type=int, help="array index (default: from the scheduler's environment)")
    a = ap.parse_args(argv)
    path = a.message
    if a.array:
        idx = a.index if a.index is not None else array_index()
        if idx is None:
            print("genefarm-worker: error: --array needs the array index (SGE_TASK_ID, SLURM_ARRAY_TASK_ID, "
                  "GENEFARM_ARRAY_INDEX or --index)", file=sys.stderr)
            return 2
        path = os.path.join(a.array, f"{idx}.json")
    if not path:
        ap.error("give a task message or --array DIR")
    try:
        msg = load(path)
    except MessageError as e:
        print(f"genefarm-worker: error: {e}", file=sys.stderr)
        return 2
    return Worker(msg).run()


if __name__ == "__main__":
    sys.exit(main())
