"""Any DRMAA v1 scheduler (tested on SGE) through the `drmaa` package.

Arrays are bulk jobs (runBulkJobs); every element's output goes to LOG/NAME.<index>.log
(DRMAA's parametric index in outputPath). Element ids are the scheduler's (SGE: JOB.TASK).
DRMAA's states are translated here: queued/held -> queued; running/suspended -> running;
done/failed -> we reap the element (wait with no timeout) for its exit code, signal and resource
usage; undetermined, or an id this session does not know (a master restarted since it
submitted) -> unknown, and the master goes by the worker's report.
The library needs DRMAA_LIBRARY_PATH, and SGE's libdrmaa needs jemalloc preloaded into the
process at start (LD_PRELOAD): `genefarm poller` re-executes itself with it when missing.
"""
import os

from master.backends.base import Backend, BackendError, JobStatus, signal_of_exit
from master.states import JobState

JEMALLOC = "/lib/x86_64-linux-gnu/libjemalloc.so.2"


class DrmaaBackend(Backend):
    name = "drmaa"

    def __init__(self, settings):
        import drmaa  # raises when the library cannot be found or loaded
        self.drmaa = drmaa
        self.session = drmaa.Session()
        self.session.initialize()
        self.queue = settings.queue
        self.pe = settings.parallel_env
        self.finished = {}
        P = drmaa.JobState
        self.states = {P.QUEUED_ACTIVE: JobState.QUEUED, P.SYSTEM_ON_HOLD: JobState.QUEUED,
                       P.USER_ON_HOLD: JobState.QUEUED, P.USER_SYSTEM_ON_HOLD: JobState.QUEUED,
                       P.RUNNING: JobState.RUNNING, P.SYSTEM_SUSPENDED: JobState.RUNNING,
                       P.USER_SUSPENDED: JobState.RUNNING, P.USER_SYSTEM_SUSPENDED: JobState.RUNNING,
                       P.UNDETERMINED: JobState.UNKNOWN}

    def native_spec(self, spec):
        parts = ["-shell n", "-b y", f"-N {spec.name}"]
        slots = spec.cpus * spec.ranks
        if slots > 1:
            parts.append(f"-pe {self.pe} {slots}")
        if self.queue:
            parts.append(f"-q {self.queue}")
        if spec.memory_mb:
            # per slot (SGE multiplies by the slots): mem_free to place the job, h_vmem to bound it
            per = max(1, spec.memory_mb * spec.ranks // slots)
            vm = max(per, (spec.vmem_mb or spec.memory_mb) * spec.ranks // slots)
            parts.append(f"-l mem_free={per}M,h_vmem={vm}M")
        return " ".join(parts)

    def submit(self, spec):
        d = self.drmaa
        os.makedirs(spec.log_dir, exist_ok=True)
        jt = self.session.createJobTemplate()
        try:
            jt.remoteCommand = spec.argv[0]
            jt.args = list(spec.argv[1:])
            jt.jobName = spec.name
            jt.nativeSpecification = self.native_spec(spec)
            jt.outputPath = ":" + os.path.join(spec.log_dir, f"{spec.name}.{d.JobTemplate.PARAMETRIC_INDEX}.log")
            jt.joinFiles = True
            jt.workingDirectory = spec.manifest
            jt.jobEnvironment = {k: str(v) for k, v in spec.env.items()}
            try:
                return list(self.session.runBulkJobs(jt, 1, spec.count, 1))
            except d.errors.DrmaaException as e:
                raise BackendError(f"DRMAA runBulkJobs: {e}") from None
        finally:
            self.session.deleteJobTemplate(jt)

    def _reap(self, jid):
        d = self.drmaa
        try:
            info = self.session.wait(jid, d.Session.TIMEOUT_NO_WAIT)
        except (d.errors.InvalidJobException, d.errors.ExitTimeoutException):
            return None
        except d.errors.DrmaaException:
            return None
        ru = dict(info.resourceUsage or {})
        code = int(float(info.exitStatus)) if info.hasExited else None
        sig = None
        if info.hasSignal:
            name = str(info.terminatedSignal or "")
            import signal as sigmod
            sig = getattr(sigmod, name, None) or getattr(sigmod, "SIG" + name.upper(), None) or 9
            sig = int(sig)
        sig = sig or signal_of_exit(code)
        if info.wasAborted:
            state = JobState.CANCELLED
        else:
            state = JobState.DONE if code == 0 and not sig else JobState.FAILED
        cpu = float(ru["cpu"]) if "cpu" in ru else None
        mem = round(float(ru["maxvmem"]) / 2 ** 20, 1) if "maxvmem" in ru else None
        return JobStatus(state, code, sig, "", cpu, mem, raw="done" if state == JobState.DONE else "failed")

    def status(self, ids):
        d = self.drmaa
        out = {}
        for jid in ids:
            if jid in self.finished:
                out[jid] = self.finished[jid]
                continue
            try:
                st = self.session.jobStatus(jid)
            except d.errors.InvalidJobException:
                out[jid] = JobStatus(JobState.UNKNOWN, raw="unknown to this DRMAA session")
                continue
            except d.errors.DrmaaException as e:
                out[jid] = JobStatus(JobState.UNKNOWN, raw=f"DRMAA error: {e}")
                continue
            if st in (d.JobState.DONE, d.JobState.FAILED):
                res = self._reap(jid)
                if res is None:
                    res = JobStatus(JobState.DONE if st == d.JobState.DONE else JobState.FAILED, raw=str(st))
                self.finished[jid] = res
                out[jid] = res
            else:
                out[jid] = JobStatus(self.states.get(st, JobState.UNKNOWN), raw=str(st))
        return out

    def cancel(self, ids):
        d = self.drmaa
        for jid in ids:
            try:
                self.session.control(jid, d.JobControlAction.TERMINATE)
            except d.errors.DrmaaException:
                pass

    def close(self):
        try:
            self.session.exit()
        except Exception:  # noqa: BLE001
            pass
