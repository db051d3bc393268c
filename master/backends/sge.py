"""SGE through its own commands: qsub -t (arrays), qstat -xml (queued and running), qacct (finished).

Used when DRMAA cannot be loaded (master.backends.get_backend says so loudly), or chosen by name. The
array's job script is rendered from templates/sge_job.sh.tmpl. Element ids are JOB.TASK.
SGE's states are translated here, and only here: qw/hqw -> queued; r/t/Rr/Rt/s/S/T -> running;
dr/dt -> cancelled; Eqw -> failed (it will never run); anything else -> unknown. A job gone from
qstat is looked up in the accounting file (qacct -j), which SGE writes a second or so later;
until it is there the element is unknown.
"""
import logging
import os
import re
import xml.etree.ElementTree as ET

from master import templates
from master.backends import commands
from master.backends.base import Backend, BackendError, JobStatus, signal_of_exit
from master.states import JobState

log = logging.getLogger("genefarm.sge")

STATES = {"qw": JobState.QUEUED, "hqw": JobState.QUEUED, "hRwq": JobState.QUEUED, "Rq": JobState.QUEUED,
          "r": JobState.RUNNING, "t": JobState.RUNNING, "Rr": JobState.RUNNING, "Rt": JobState.RUNNING,
          "s": JobState.RUNNING, "S": JobState.RUNNING, "T": JobState.RUNNING, "ts": JobState.RUNNING,
          "dr": JobState.CANCELLED, "dt": JobState.CANCELLED, "dqw": JobState.CANCELLED,
          "Eqw": JobState.FAILED, "Ehqw": JobState.FAILED}


def translate(raw):
    return STATES.get(raw, JobState.UNKNOWN)


def parse_qstat_xml(text):
    """{"JOB.TASK": (raw state, queue)} from `qstat -xml -g d`; task ranges (2-5:1) are expanded."""
    out = {}
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        raise BackendError("qstat -xml printed something that is not XML") from None
    for jl in root.iter("job_list"):
        job = (jl.findtext("JB_job_number") or "").strip()
        raw = (jl.findtext("state") or "").strip()
        queue = (jl.findtext("queue_name") or "").strip()
        tasks = (jl.findtext("tasks") or "").strip()
        for t in _expand(tasks):
            out[f"{job}.{t}"] = (raw, queue)
    return out


def _expand(tasks):
    if not tasks:
        return ["1"]
    ids = []
    for part in tasks.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if not m:
            continue
        a = int(m.group(1))
        b = int(m.group(2) or a)
        s = int(m.group(3) or 1)
        ids += [str(i) for i in range(a, b + 1, s)]
    return ids


def parse_qacct(text):
    """{taskid: {field: value}} from `qacct -j JOB` (blocks separated by ==== lines)."""
    out = {}
    for block in re.split(r"^=+\s*$", text, flags=re.M):
        rec = {}
        for line in block.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2:
                rec[parts[0]] = parts[1].strip()
        if "taskid" in rec:
            t = rec["taskid"]
            out["1" if t == "undefined" else t] = rec
    return out


def _seconds(v):
    m = re.match(r"([\d.]+)", v or "")
    return float(m.group(1)) if m else None


def _megabytes(v):
    m = re.match(r"([\d.]+)\s*([KMGT]?)", v or "")
    if not m:
        return None
    f = {"": 1 / 2 ** 20, "K": 1 / 1024, "M": 1, "G": 1024, "T": 2 ** 20}[m.group(2)]
    return round(float(m.group(1)) * f, 1)


def status_of_qacct(rec):
    code = int(rec.get("exit_status", "0").split()[0])
    failed = rec.get("failed", "0").split()[0]
    sig = signal_of_exit(code)
    if failed not in ("0", "") and code == 0:
        state = JobState.FAILED          # SGE could not start or had to abort it
    else:
        state = JobState.DONE if code == 0 else JobState.FAILED
    return JobStatus(state, code, sig, rec.get("hostname", ""), _seconds(rec.get("cpu")),
                     _megabytes(rec.get("maxvmem")), raw=f"exited (failed={rec.get('failed', '0')})")


class SgeBackend(Backend):
    name = "sge"

    def __init__(self, settings):
        self.queue = settings.queue
        self.pe = settings.parallel_env
        self.finished = {}          # JOB.TASK -> JobStatus (accounting never changes)

    def render(self, spec):
        d = []
        slots = spec.cpus * spec.ranks
        if slots > 1:
            d.append(f"#$ -pe {self.pe} {slots}")
        if self.queue:
            d.append(f"#$ -q {self.queue}")
        if spec.memory_mb:
            # per slot (SGE multiplies by the slots): mem_free to place the job, h_vmem to bound it
            per = max(1, spec.memory_mb * spec.ranks // slots)
            vm = max(per, (spec.vmem_mb or spec.memory_mb) * spec.ranks // slots)
            d.append(f"#$ -l mem_free={per}M,h_vmem={vm}M")
        return templates.render("sge_job.sh.tmpl", name=spec.name, count=spec.count, log_dir=spec.log_dir,
                                directives="\n".join(d), exports=templates.exports(spec.env),
                                command=templates.command(spec.argv))

    def submit(self, spec):
        os.makedirs(spec.log_dir, exist_ok=True)
        script = os.path.join(spec.manifest, "job.sge.sh")
        with open(script, "w") as f:
            f.write(self.render(spec))
        out, err, rc = commands.run(["qsub", "-terse", script], check=False)
        # qsub can exit non-zero and still have submitted (e.g. a spooling error after the job was
        # accepted): the job id decides, so a submitted array is never lost from sight
        m = re.match(r"\s*(\d+)", out) or re.search(r"Your job(?:-array)? (\d+)", out + err)
        if not m:
            raise BackendError(f"qsub exited {rc}: {(err or out).strip()[:500]}")
        if rc != 0:
            log.warning("qsub exited %s but submitted job %s: %s", rc, m.group(1), err.strip()[:300])
        return [f"{m.group(1)}.{i}" for i in range(1, spec.count + 1)]

    def status(self, ids):
        out = {}
        live = parse_qstat_xml(commands.run(["qstat", "-xml", "-g", "d", "-u", "*"])[0])
        gone_jobs = set()
        for jid in ids:
            if jid in self.finished:
                out[jid] = self.finished[jid]
            elif jid in live:
                raw, queue = live[jid]
                out[jid] = JobStatus(translate(raw), node=queue.partition("@")[2], raw=raw)
            else:
                gone_jobs.add(jid.partition(".")[0])
        for job in sorted(gone_jobs):
            text, _, rc = commands.run(["qacct", "-j", job], check=False)
            recs = parse_qacct(text) if rc == 0 else {}
            for t, rec in recs.items():
                st = status_of_qacct(rec)
                self.finished[f"{job}.{t}"] = st
        for jid in ids:
            if jid not in out:
                out[jid] = self.finished.get(jid) or JobStatus(JobState.UNKNOWN, raw="not in qstat nor (yet) in qacct")
        return out

    def cancel(self, ids):
        ids = list(ids)
        for i in range(0, len(ids), 500):          # qdel takes JOB.TASK ids, many at once
            commands.run(["qdel", *ids[i:i + 500]], check=False)
