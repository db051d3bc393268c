"""The local backend: arrays run as processes on this machine (the embedded default).

Its state lives in files under JOBS (GENEFARM_HOME/jobs), so a master that was killed and
started again finds its jobs where they were:
    JOBS/<array>/spec.json      the ArraySpec
    JOBS/<array>/<i>.start      pid and start time of element i's runner (it started)
    JOBS/<array>/<i>.exit       how element i ended: exit code or signal, CPU seconds, peak memory
    JOBS/<array>/<i>.cancel     element i was cancelled (before or while running)
Elements wait until enough of the `slots` cores and of the machine's memory are free (each takes
spec.cpus x ranks cores and the memory its task asked for), oldest array first. Each element runs under its own runner process (`python -m master.backends.localrun`),
detached from the master in a session (process group) of its own: killing the master leaves it
running, and killing the element's process group is seen as a job that ended by a signal.
"""
import json
import os
import signal
import subprocess
import sys
import time

from master.backends.base import ArraySpec, Backend, JobStatus, signal_of_exit
from master.states import JobState


def _alive(pid, started_ticks=None):
    """True if pid runs and is the process we started (not a zombie, not a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    rest = st[st.rfind(")") + 2:].split()
    if rest[0] in ("Z", "X"):
        return False
    if started_ticks is not None and int(rest[19]) != int(started_ticks):
        return False
    return True


def _machine_memory_mb():
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                if ln.startswith("MemTotal:"):
                    return int(ln.split()[1]) // 1024
    except OSError:
        pass
    return 1 << 20


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class LocalBackend(Backend):
    name = "local"

    def __init__(self, jobs_dir, slots, memory_mb=0):
        self.dir = jobs_dir
        self.slots = max(1, int(slots))
        self.memory_mb = int(memory_mb) or _machine_memory_mb()
        os.makedirs(self.dir, exist_ok=True)

    # ------------------------------------------------------------ the interface
    def submit(self, spec):
        aid = f"{time.time_ns():x}"
        d = os.path.join(self.dir, aid)
        os.makedirs(d)
        tmp = os.path.join(d, "spec.json.tmp")
        with open(tmp, "w") as f:
            json.dump(spec.__dict__, f)
        os.replace(tmp, os.path.join(d, "spec.json"))
        self.pump()
        return [f"{aid}.{i}" for i in range(1, spec.count + 1)]

    def status(self, ids):
        self.pump()
        out = {}
        for jid in ids:
            out[jid] = self._status1(jid)
        return out

    def cancel(self, ids):
        for jid in ids:
            aid, i = self._split(jid)
            d = os.path.join(self.dir, aid)
            if not os.path.isdir(d):
                continue
            open(os.path.join(d, f"{i}.cancel"), "w").close()
            st = _read_json(os.path.join(d, f"{i}.start"))
            if st and not os.path.exists(os.path.join(d, f"{i}.exit")) and _alive(st["pid"], st.get("ticks")):
                try:
                    os.killpg(st["pid"], signal.SIGTERM)
                except OSError:
                    pass

    # ------------------------------------------------------------ inside
    @staticmethod
    def _split(jid):
        aid, _, i = jid.rpartition(".")
        return aid, int(i)

    def _status1(self, jid):
        try:
            aid, i = self._split(jid)
        except ValueError:
            return JobStatus(JobState.UNKNOWN, raw="malformed id")
        d = os.path.join(self.dir, aid)
        if not os.path.isdir(d):
            return JobStatus(JobState.UNKNOWN, raw="no such job")
        ex = _read_json(os.path.join(d, f"{i}.exit"))
        cancelled = os.path.exists(os.path.join(d, f"{i}.cancel"))
        if ex is not None:
            sig = ex.get("signal") or signal_of_exit(ex.get("exit_code"))
            if cancelled:
                state = JobState.CANCELLED
            else:
                state = JobState.DONE if ex.get("exit_code") == 0 and not sig else JobState.FAILED
            return JobStatus(state, ex.get("exit_code"), sig, ex.get("node", ""), ex.get("cpu_seconds"),
                             ex.get("peak_mb"), raw="exited")
        st = _read_json(os.path.join(d, f"{i}.start"))
        if st is None:
            launch = os.path.join(d, f"{i}.launch")
            if not cancelled and os.path.exists(launch) and time.time() - os.path.getmtime(launch) > 30:
                return JobStatus(JobState.FAILED, raw="its runner never started")
            return JobStatus(JobState.CANCELLED if cancelled else JobState.QUEUED, raw="waiting for a slot")
        if _alive(st["pid"], st.get("ticks")):
            return JobStatus(JobState.RUNNING, node=st.get("node", ""), raw="running")
        # started, gone, and no exit record: its process group was killed
        return JobStatus(JobState.CANCELLED if cancelled else JobState.FAILED, None, signal.SIGKILL,
                         st.get("node", ""), raw="vanished (runner killed)")

    def _arrays(self):
        for aid in sorted(os.listdir(self.dir)):
            spec = _read_json(os.path.join(self.dir, aid, "spec.json"))
            if spec is not None:
                yield aid, ArraySpec(**spec)

    def pump(self):
        """Start waiting elements while cores and memory are free (an element takes its cores and
        the memory its task asked for; one runs even when it alone asks for more); returns how many
        started."""
        used = 0
        mem = 0
        waiting = []
        for aid, spec in self._arrays():
            d = os.path.join(self.dir, aid)
            names = set(os.listdir(d))
            if all(f"{i}.exit" in names or f"{i}.cancel" in names for i in range(1, spec.count + 1)):
                continue
            for i in range(1, spec.count + 1):
                if f"{i}.exit" in names:
                    continue
                if f"{i}.start" in names:
                    st = _read_json(os.path.join(d, f"{i}.start"))
                    if st and _alive(st["pid"], st.get("ticks")):
                        used += min(spec.cpus * spec.ranks, self.slots)
                        mem += spec.memory_mb * spec.ranks
                elif f"{i}.cancel" not in names and f"{i}.launch" not in names:
                    waiting.append((aid, i, spec))
                elif f"{i}.launch" in names and f"{i}.cancel" not in names:
                    # launched but the runner has not written .start yet (or died before it did)
                    age = time.time() - os.path.getmtime(os.path.join(d, f"{i}.launch"))
                    if age < 30:
                        used += min(spec.cpus * spec.ranks, self.slots)
                        mem += spec.memory_mb * spec.ranks
        started = 0
        for aid, i, spec in waiting:
            need = min(spec.cpus * spec.ranks, self.slots)
            need_mem = spec.memory_mb * spec.ranks
            if used + need > self.slots or (used and mem + need_mem > self.memory_mb):
                break
            self._launch(aid, i, spec)
            used += need
            mem += need_mem
            started += 1
        return started

    def _launch(self, aid, i, spec):
        d = os.path.join(self.dir, aid)
        open(os.path.join(d, f"{i}.launch"), "w").close()
        env = dict(os.environ, **spec.env)
        # the runner forks itself into the background; wait for the short-lived parent only
        subprocess.run([sys.executable, "-m", "master.backends.localrun", d, str(i)], env=env, check=False,
                       stdin=subprocess.DEVNULL, timeout=60)
