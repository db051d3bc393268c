"""Slurm through its own commands: sbatch --array, squeue (queued and running), scontrol show job
(finished, for MinJobAge seconds), sacct -c (the job completion file, later).

The array's job script is rendered from templates/slurm_job.sh.tmpl (multi-rank tasks get
--ntasks, and the worker runs the kernel under srun). Element ids are ARRAYJOB_INDEX.
Slurm's states are translated here, and only here (see STATES); anything else -> unknown.
"""
import os
import re

from master import templates
from master.backends import commands
from master.backends.base import Backend, BackendError, JobStatus
from master.states import JobState

Q, R, D, F, C = JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLED
STATES = {"PENDING": Q, "CONFIGURING": Q, "REQUEUED": Q, "REQUEUE_HOLD": Q, "REQUEUE_FED": Q, "RESV_DEL_HOLD": Q,
          "RUNNING": R, "COMPLETING": R, "SUSPENDED": R, "STAGE_OUT": R, "SIGNALING": R, "RESIZING": R,
          "STOPPED": R, "COMPLETED": D, "FAILED": F, "TIMEOUT": F, "NODE_FAIL": F, "OUT_OF_MEMORY": F,
          "BOOT_FAIL": F, "DEADLINE": F, "PREEMPTED": F, "CANCELLED": C, "REVOKED": C}


def translate(raw):
    return STATES.get((raw or "").split()[0].rstrip("+") if raw else "", JobState.UNKNOWN)


def _exit(raw_state, exitcode):
    """(exit code, signal) from Slurm's ExitCode "code:signal" (PREEMPTED counts as SIGTERM)."""
    code, sig = None, None
    m = re.fullmatch(r"(\d+):(\d+)", exitcode or "")
    if m:
        code, sig = int(m.group(1)), int(m.group(2)) or None
    if raw_state == "PREEMPTED" and not sig:
        sig = 15
    return code, sig


def parse_scontrol(text):
    """{"ARRAY_INDEX": (fields)} from `scontrol show job -o` lines."""
    out = {}
    for line in text.splitlines():
        f = dict(m.groups() for m in re.finditer(r"(\w+(?:/\w+)?)=(\S*)", line))
        if "JobId" not in f:
            continue
        tasks = f.get("ArrayTaskId", "")
        if tasks.isdigit() and int(tasks) >= 4294967294:
            out[f"{f.get('ArrayJobId')}_*"] = f      # the array's own record: elements cancelled while pending
            continue
        if "ArrayJobId" not in f or tasks in ("", "N/A"):
            out[f["JobId"]] = f
            continue
        for t in _expand(tasks):          # pending elements stay one record: "1-5", "3,7-9%2"
            out[f"{f['ArrayJobId']}_{t}"] = f
    return out


def _expand(tasks):
    ids = []
    for part in tasks.split("%")[0].split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if m:
            a, b, step = int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3) or 1)
            ids += [str(i) for i in range(a, b + 1, step)]
    return ids


class SlurmBackend(Backend):
    name = "slurm"

    def __init__(self, settings):
        self.partition = settings.queue
        self.finished = {}
        self.raw_ids = {}           # ARRAY_INDEX -> Slurm's own job id (for sacct -c later)

    def render(self, spec):
        d = []
        if self.partition:
            d.append(f"#SBATCH --partition={self.partition}")
        if spec.memory_mb:
            # Slurm bounds resident memory (cgroups): a rank's own memory, per core of the rank
            d.append(f"#SBATCH --mem-per-cpu={max(1, -(-spec.memory_mb // max(1, spec.cpus)))}M")
        return templates.render("slurm_job.sh.tmpl", name=spec.name, count=spec.count, log_dir=spec.log_dir,
                                ranks=spec.ranks, cpus=spec.cpus, directives="\n".join(d),
                                exports=templates.exports(spec.env), command=templates.command(spec.argv))

    def submit(self, spec):
        os.makedirs(spec.log_dir, exist_ok=True)
        script = os.path.join(spec.manifest, "job.slurm.sh")
        with open(script, "w") as f:
            f.write(self.render(spec))
        out, _, _ = commands.run(["sbatch", "--parsable", "--chdir", spec.manifest, script])
        m = re.match(r"\s*(\d+)", out)
        if not m:
            raise BackendError(f"sbatch printed no job id: {out.strip()[:200]!r}")
        return [f"{m.group(1)}_{i}" for i in range(1, spec.count + 1)]

    def status(self, ids):
        out = {}
        want = [j for j in ids if j not in self.finished]
        arrays = sorted({j.partition("_")[0] for j in want})
        live = {}
        for i in range(0, len(arrays), 200):
            text, _, _ = commands.run(["squeue", "-h", "-r", "-j", ",".join(arrays[i:i + 200]),
                                       "-o", "%i|%T|%N"], check=False)
            for line in text.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 3:
                    live[parts[0]] = (parts[1], parts[2])
        gone = sorted({j.partition("_")[0] for j in want if j not in live})
        for a in gone:
            text, _, rc = commands.run(["scontrol", "show", "job", "-o", a], check=False)
            if rc != 0:
                continue
            for key, f in parse_scontrol(text).items():
                self.raw_ids[key] = f.get("JobId", "")
                raw = f.get("JobState", "")
                st = translate(raw)
                if st in (D, F, C):
                    code, sig = _exit(raw, f.get("ExitCode"))
                    self.finished[key] = JobStatus(st, code, sig, f.get("NodeList", ""), raw=raw)
        for jid in want:
            meta = self.finished.get(jid.partition("_")[0] + "_*")
            if jid not in self.finished and jid not in live and meta is not None:
                self.finished[jid] = meta
        for jid in ids:
            if jid in self.finished:
                out[jid] = self.finished[jid]
            elif jid in live:
                raw, node = live[jid]
                out[jid] = JobStatus(translate(raw), node=node if node not in ("", "(null)") else "", raw=raw)
        missing = [j for j in ids if j not in out and self.raw_ids.get(j)]
        if missing:
            raw_of = {self.raw_ids[j]: j for j in missing}
            text, _, _ = commands.run(["sacct", "-c", "-n", "-P", "-j", ",".join(raw_of),
                                       "--format=JobID,State,ExitCode,NodeList"], check=False)
            for line in text.splitlines():
                p = line.split("|")
                if len(p) == 4 and p[0] in raw_of:
                    code, sig = _exit(p[1], p[2])
                    self.finished[raw_of[p[0]]] = out[raw_of[p[0]]] = JobStatus(translate(p[1]), code, sig, p[3],
                                                                               raw=p[1])
        for jid in ids:
            out.setdefault(jid, JobStatus(JobState.UNKNOWN, raw="not in squeue, scontrol or the job completion file"))
        return out

    def cancel(self, ids):
        ids = list(ids)
        for i in range(0, len(ids), 500):
            commands.run(["scancel", *ids[i:i + 500]], check=False)
