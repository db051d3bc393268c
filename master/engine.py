"""The master's loop: one `tick()` moves every run forward. The poller calls it on a timer.

A tick, each step committed before the next (a master killed anywhere loses nothing; started
again it reads the store and carries on):
1. cancel what users asked to cancel;
2. follow every open attempt: the worker's report (authoritative when present), else the
   backend's state and the worker's heartbeat; close the attempts that ended and decide:
   done -> task DONE (and a cache entry); bad input -> FAILED (no retry); temporary or crashed
   -> READY again while retries remain (one spent), else FAILED; preempted, killed by a signal,
   or vanished -> READY again without spending a retry; cancelled -> CANCELLED;
3. in the runs where a task changed state: make the next stages' tasks (pipeline.advance);
   PENDING tasks whose deps are done -> READY; a run whose tasks are all done -> DONE (with a
   summary); a failed task fails its run (the rest is cancelled);
4. READY tasks, as many as fit: compute the cache key; a hit -> DONE without running; else
   submit, grouped into arrays (one per run, stage and resources), no more than `max_queued` open
   attempts in all.
A tick's cost follows what changed, not the size of the runs.
Only this loop changes task states (master.states checks every move).
"""
import logging
import os
import time

from sqlalchemy import Integer, func, select
from sqlalchemy.orm import selectinload

from master import cachekey, pipeline
from master.resources import RETRY_FACTOR
from master.backends.base import ArraySpec, BackendError
from master.states import (ACTIVE, JOB_FINISHED, TERMINAL, EndReason, JobState, RunState, TaskState,
                           check_transition)
from master.store import Attempt, CacheEntry, FileHash, Run, Task, add_event
from worker.contract import EXIT_PREEMPTED, Outcome, Report, read_report
from worker.message import TaskMessage, read_heartbeat, write_json_atomic
from worker import storage

log = logging.getLogger("genefarm.engine")
REPORT_GRACE = 3.0        # seconds to wait for a report after the backend says the job ended
OOM_SHARE = 0.9           # a job SIGKILLed at this share of its memory request was killed for memory
VMEM_SLACK_MB = 4096      # address space an interpreter with numba's threads reserves beyond what it uses


class Engine:
    def __init__(self, settings, sessionmaker, backend):
        self.settings = settings
        self.Session = sessionmaker
        self.backend = backend
        self.version = cachekey.kernel_version()
        self.serial = 0
        # runs where a task changed state since their last look (advance, promote, finish_runs look
        # only at those), and the newest run id seen (runs made by the API are new to this loop)
        self.dirty = set()
        self.last_run_id = 0

    # ------------------------------------------------------------------ helpers
    def move(self, db, task, new, why=""):
        check_transition(task.state, new)
        if task.state != TaskState(new).value:
            if TaskState(new) in TERMINAL:        # what can make new tasks, promote others, end the run
                self.dirty.add(task.run_id)
            task.state = TaskState(new).value
            task.updated = time.time()
            if why:
                task.reason = why
                add_event(db, task.run_id, task.id, TaskState(new).value, why)

    def run_dir(self, run_id):
        return os.path.join(self.settings.dir("runs"), str(run_id))

    def notify_dir(self):
        """Where workers drop <task>.<attempt> once they have reported (master.poller watches it)."""
        return os.path.join(self.settings.dir("runs"), "reported")

    def report_dir(self, task, number):
        return os.path.join(self.run_dir(task.run_id), "tasks", str(task.id), f"a{number}")

    # ------------------------------------------------------------------ the loop
    def tick(self):
        """One pass of the loop. Its cost follows what changed: the open attempts (at most
        max_queued), the runs where a task changed state, and the ready tasks that fit under the cap."""
        t0 = time.perf_counter()
        with self.Session() as db:
            self.notice_new_runs(db)
            self.recover_submissions(db)
            self.handle_cancels(db)
            self.poll_attempts(db)
            # a task's state change can make the next tasks, promote waiting ones, end the run:
            # look again until nothing more changes in this tick
            for _ in range(4):
                if not self.dirty:
                    break
                runs, self.dirty = self.dirty, set()
                for run in db.scalars(select(Run).where(Run.id.in_(runs), Run.state == RunState.RUNNING.value)).all():
                    if pipeline.advance(db, self, run):
                        db.commit()
                        self.dirty.add(run.id)
                    self.promote(db, run)
                    self.finish_run(db, run)
            self.submit_ready(db)
        return time.perf_counter() - t0

    def notice_new_runs(self, db):
        """Runs made since the last look (by the API, or before this master started) are looked at."""
        new = db.scalars(select(Run.id).where(Run.id > self.last_run_id, Run.state == RunState.RUNNING.value)).all()
        if new:
            self.dirty.update(new)
        top = db.scalar(select(func.max(Run.id)))
        self.last_run_id = max(self.last_run_id, top or 0)

    def recover_submissions(self, db):
        """Attempts left without a job id by a master that died while submitting them. The
        submission may have reached the scheduler: the master writes the attempt's report itself
        (preempted), and a worker never runs an attempt that has a report, so such an orphan job
        ends at once instead of doing the work again beside the next attempt. If the orphan has
        already reported, its report is taken as the attempt's end."""
        stale = db.scalars(select(Attempt).where(Attempt.end_reason == "", Attempt.job_id == "",
                                                 Attempt.submitted < time.time() - 60)).all()
        for a in stale:
            t = a.task
            why = "the master stopped while submitting this attempt; submitted again (no retry spent)"
            rdir = self.report_dir(t, a.number)
            mine = Report(task=t.id, attempt=a.number, stage=t.stage, outcome=Outcome.PREEMPTED.value,
                          exit_code=EXIT_PREEMPTED, message=why, by="master")
            try:
                wrote = write_json_atomic(os.path.join(rdir, "report.json"), mine.to_dict(), exclusive=True)
            except OSError as e:           # an orphan then runs its copy; nothing else is lost
                log.warning("cannot write the report of attempt %s of task %s: %s", a.number, t.id, e)
                wrote = True
            if not wrote:
                rep = read_report(rdir)
                if rep is not None and rep.attempt == a.number and rep.task == t.id:
                    self.close_from_report(db, t, a, rep)
                    continue
            self.close(db, t, a, "preempted", None, why)
        if stale:
            db.commit()

    def handle_cancels(self, db):
        runs = db.scalars(select(Run).where(Run.state == RunState.RUNNING.value, Run.cancel_requested)).all()
        for run in runs:
            open_atts = [a for t in run.tasks for a in t.attempts if a.end_reason == "" and a.job_id]
            if open_atts:
                try:
                    self.backend.cancel([a.job_id for a in open_atts])
                except BackendError as e:
                    log.warning("cancel: %s", e)
            for t in run.tasks:
                for a in t.attempts:
                    if a.end_reason == "":
                        a.end_reason, a.ended = EndReason.CANCELLED.value, time.time()
                if TaskState(t.state) not in TERMINAL:
                    self.move(db, t, TaskState.CANCELLED, "cancelled by a user")
            run.state, run.finished, run.message = RunState.CANCELLED.value, time.time(), "cancelled by a user"
            add_event(db, run.id, None, "cancelled", "run cancelled by a user")
            db.commit()

    # ------------------------------------------------------------------ attempts
    def poll_attempts(self, db):
        """Follow the open attempts (at most max_queued): those the workers say they reported (one
        listing of the notify directory) are closed from their reports; the rest are asked of the
        backend in one call, and their heartbeats read while they start or when they go quiet."""
        # the tasks' few columns every open attempt needs; the rest loads only for those that end
        atts = db.scalars(select(Attempt).where(Attempt.end_reason == "")
                          .options(selectinload(Attempt.task).load_only(Task.id, Task.run_id, Task.state,
                                                                        Task.stage, Task.key))).all()
        if not atts:
            return
        try:
            marked = set(os.listdir(self.notify_dir()))
        except OSError:
            marked = set()
        now = time.time()
        reports = {}
        for a in atts:
            if f"{a.task_id}.{a.number}" in marked:
                reports[a.id] = read_report(self.report_dir(a.task, a.number))
        ask = [a.job_id for a in atts if a.job_id and reports.get(a.id) is None]
        states = {}
        if ask:
            try:
                states = self.backend.status(ask)
            except BackendError as e:
                log.warning("status: %s", e)
        hb_every = max(2.0, 2 * self.settings.heartbeat_seconds)
        with db.no_autoflush:                 # one flush at the commit, not one per attempt closed
            self._follow(db, atts, reports, states, now, hb_every)
        db.commit()

    def _follow(self, db, atts, reports, states, now, hb_every):
        for a in atts:
            t = a.task
            rep = reports.get(a.id)
            js = states.get(a.job_id)
            if rep is None and js is not None and js.state in JOB_FINISHED:
                rep = read_report(self.report_dir(t, a.number))      # a worker that left no mark
            if rep is not None and rep.attempt == a.number and rep.task == t.id:
                self.close_from_report(db, t, a, rep)
                self._unmark(f"{t.id}.{a.number}")
                continue
            if not a.job_id:
                continue
            if t.state == TaskState.QUEUED.value or now - (a.heartbeat or a.submitted or 0) > hb_every:
                hb = read_heartbeat(self.report_dir(t, a.number))
                if hb:
                    a.heartbeat = hb.get("at")
                    if a.started is None:
                        a.started = hb.get("started") or now
                    a.node = hb.get("node") or a.node
                    if t.state == TaskState.QUEUED.value:
                        self.move(db, t, TaskState.RUNNING, f"attempt {a.number} running on {a.node}")
            if js is None:
                continue
            a.state = js.state.value
            if js.node and not a.node:
                a.node = js.node
            if js.state == JobState.RUNNING:
                if a.started is None:
                    a.started = now
                if t.state == TaskState.QUEUED.value:
                    self.move(db, t, TaskState.RUNNING, f"attempt {a.number} running on {a.node or '?'}")
            elif js.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
                if a.ended is None:
                    a.ended = now                   # give the report a moment to appear (NAS)
                    continue
                if now - a.ended < REPORT_GRACE:
                    continue
                a.cpu_seconds, a.peak_mb = js.cpu_seconds, js.peak_mb
                self.close_from_job(db, t, a, js)
            elif js.state == JobState.UNKNOWN:
                last = max(a.heartbeat or 0, a.submitted or 0)
                if now - last > self.settings.lost_after:
                    self.close(db, t, a, "preempted", None,
                               f"lost: the scheduler no longer knows job {a.job_id} ({js.raw}), no report and no "
                               f"heartbeat for {int(now - last)} s; requeued without spending a retry")

    def _unmark(self, name):
        try:
            os.unlink(os.path.join(self.notify_dir(), name))
        except OSError:
            pass

    def close_from_report(self, db, t, a, rep):
        """End an attempt from its worker's Report (worker.contract)."""
        a.cpu_seconds = rep.cpu_seconds
        a.peak_mb = rep.peak_mb
        a.node = rep.node or a.node
        a.started = rep.started or a.started
        a.ended = rep.ended or time.time()
        outcome = rep.outcome or Outcome.FAILED.value
        if outcome == Outcome.DONE.value:
            t.result = rep.result or {}
        if rep.memory_exceeded:
            outcome = "memory"
        self.close(db, t, a, outcome, rep.exit_code, rep.message or "")

    def close_from_job(self, db, t, a, js):
        run = t.run
        code = js.exit_code
        if js.state == JobState.CANCELLED:
            if run.cancel_requested:
                self.close(db, t, a, "cancelled", code, "cancelled")
            else:
                self.close(db, t, a, "preempted", code, f"job {a.job_id} was cancelled by the scheduler or an "
                           f"administrator ({js.raw}); requeued without spending a retry")
        elif "OUT_OF_MEMORY" in (js.raw or "").upper() or (
                (js.signal == 9 or code == 137) and js.peak_mb and t.resources.get("memory_mb")
                and js.peak_mb >= OOM_SHARE * int(t.resources["memory_mb"]) * int(t.resources.get("ranks", 1))):
            self.close(db, t, a, "memory", code, f"job {a.job_id} was killed for memory ({js.raw}): used "
                       f"{js.peak_mb or 0:,.0f} of {int(t.resources.get('memory_mb', 0)):,} MB asked for")
        elif js.signal or (code is not None and code > 128):
            self.close(db, t, a, "preempted", code, f"job {a.job_id} was killed by signal "
                       f"{js.signal or code - 128} before the worker could report ({js.raw}); requeued without "
                       f"spending a retry")
        elif code == 2:
            self.close(db, t, a, "bad_input", code, f"job {a.job_id} exited 2 (bad input) without a report; "
                       f"see its log {a.log}")
        elif code == 75:
            self.close(db, t, a, "temporary", code, f"job {a.job_id} exited 75 (temporary) without a report")
        else:
            self.close(db, t, a, "failed", code, f"job {a.job_id} ended ({js.raw}, exit {code}) without a "
                       f"report from the worker; see its log {a.log}")

    def close(self, db, t, a, outcome, code, message):
        """End attempt a of task t with outcome (a worker outcome or "cancelled") and decide what next."""
        s = self.settings
        a.exit_code = code
        a.message = message or ""
        a.ended = a.ended or time.time()
        if a.started and a.ended:
            a.wall_seconds = round(a.ended - a.started, 3)
        if TaskState(t.state) in TERMINAL:          # e.g. cancelled meanwhile: just close the attempt
            a.end_reason = EndReason.CANCELLED.value if t.state == TaskState.CANCELLED.value else outcome
            return
        if outcome == "done":
            a.end_reason = EndReason.DONE.value
            if not pipeline.is_complete(t):
                a.end_reason = EndReason.FAILED.value
                outcome, message = "failed", f"the worker reported done but {t.outputs.get('out')} is incomplete"
                a.message = message
            else:
                self.move(db, t, TaskState.DONE, f"attempt {a.number} done on {a.node or '?'}")
                if not db.get(CacheEntry, t.cache_key):
                    db.add(CacheEntry(key=t.cache_key, stage=t.stage, outputs=t.outputs, result=t.result or {},
                                      task_id=t.id))
                return
        if outcome == "cancelled":
            a.end_reason = EndReason.CANCELLED.value
            self.move(db, t, TaskState.CANCELLED, "cancelled")
            return
        if outcome == "preempted":
            a.end_reason = EndReason.PREEMPTED.value
            t.preemptions += 1
            if t.preemptions > s.max_preemptions:
                self.move(db, t, TaskState.FAILED, f"preempted {t.preemptions} times (limit {s.max_preemptions}): "
                          f"{message}")
            else:
                self.move(db, t, TaskState.READY, f"attempt {a.number} preempted: {message} "
                          f"(preemption {t.preemptions}; retries spent {t.retries}/{s.max_retries})")
            return
        a.end_reason = EndReason.FAILED.value
        if outcome == "memory":
            # killed for memory: a failure (never a preemption), retried once with more memory
            r = dict(t.resources or {})
            asked = int(r.get("memory_mb", 0) or 0)
            if not r.get("memory_raised") and asked and t.retries < s.max_retries:
                r["memory_mb"] = int(asked * RETRY_FACTOR)
                r["memory_raised"] = 1
                t.resources = r
                t.retries += 1
                self.move(db, t, TaskState.READY, f"attempt {a.number} failed: {message}; retried with "
                          f"{r['memory_mb']:,} MB (retry {t.retries} of {s.max_retries})")
            else:
                self.move(db, t, TaskState.FAILED, f"attempt {a.number} failed: {message}; it had already been "
                          f"given more memory: give the {t.stage} stage more (node_memory_mb, fewer threads) or "
                          f"split the work finer (more regions, smaller chunks)")
            return
        if outcome == "bad_input":
            self.move(db, t, TaskState.FAILED, f"attempt {a.number} failed on bad input (exit 2), not retried: "
                      f"{message}")
        elif t.retries < s.max_retries:
            t.retries += 1
            self.move(db, t, TaskState.READY, f"attempt {a.number} failed ({outcome}, exit {code}): {message}; "
                      f"retry {t.retries} of {s.max_retries}")
        else:
            self.move(db, t, TaskState.FAILED, f"attempt {a.number} failed ({outcome}, exit {code}): {message}; "
                      f"out of retries ({t.retries} of {s.max_retries} spent, {t.preemptions} preemptions)")

    # ------------------------------------------------------------------ new work
    def promote(self, db, run):
        """PENDING tasks of the run whose deps are all done -> READY. A dep "stage/*" is every task
        whose key starts with "stage/" (a call shard waits for the whole align stage: one entry,
        not one per chunk)."""
        pend = db.execute(select(Task.id, Task.deps).where(Task.run_id == run.id,
                                                           Task.state == TaskState.PENDING.value)).all()
        if not pend:
            return
        done = TaskState.DONE.value
        wanted = {d for _, deps in pend for d in (deps or [])}
        exact = [d for d in wanted if not d.endswith("/*")]
        states = dict(db.execute(select(Task.key, Task.state).where(Task.run_id == run.id, Task.key.in_(exact)))
                      .all()) if exact else {}
        prefix_done = {}
        for d in wanted - set(exact):
            p = d[:-1]                                    # "align/"
            like = p.replace("%", r"\%").replace("_", r"\_") + "%"
            n, n_done = db.execute(select(func.count(), func.sum(func.cast(Task.state == done, Integer)))
                                   .where(Task.run_id == run.id, Task.key.like(like, escape="\\"))).one()
            prefix_done[p] = bool(n) and int(n_done or 0) == n

        def ok(d):
            return prefix_done[d[:-1]] if d.endswith("/*") else states.get(d) == done
        ready = [tid for tid, deps in pend if all(ok(d) for d in (deps or []))]
        for i in range(0, len(ready), 500):
            for t in db.scalars(select(Task).where(Task.id.in_(ready[i:i + 500]))).all():
                self.move(db, t, TaskState.READY, "its inputs are done")
        db.commit()

    def _lookup_hash(self, db):
        def lookup(uri, size, mtime):
            fh = db.get(FileHash, uri)
            return fh.sha256 if fh and fh.size == size and fh.mtime == mtime else None

        def remember(uri, size, mtime, sha):
            fh = db.get(FileHash, uri)
            if fh is None:
                db.add(FileHash(uri=uri, size=size, mtime=mtime, sha256=sha))
            else:
                fh.size, fh.mtime, fh.sha256 = size, mtime, sha
        return lookup, remember

    def resolve_key(self, db, t):
        """Compute t.cache_key from its basis (content hashes of files, producers' keys)."""
        lookup, remember = self._lookup_hash(db)
        ids = {}
        for name, v in t.basis.get("inputs", {}).items():
            vs = v if isinstance(v, list) else [v]
            res = [cachekey.file_identity(x[5:], lookup, remember) if x.startswith("file:") else x for x in vs]
            ids[name] = res if isinstance(v, list) else res[0]
        resolved = {"inputs": ids, "params": t.params, "region": t.region, "version": self.version}
        t.basis = dict(t.basis, resolved=resolved)
        t.cache_key = cachekey.make_key(t.stage, ids, t.params, t.region, self.version)

    def why_miss(self, db, t):
        """Why task t has to run: the earlier run of the same task, and what changed since."""
        prev = db.scalars(select(Task).join(Run).where(Run.sample_id == t.run.sample_id, Task.key == t.key,
                                                       Task.id != t.id, Task.cache_key != "")
                          .order_by(Task.id.desc())).first()
        if prev is None:
            return "never run before for this sample: no earlier result with this cache key"
        if prev.cache_key == t.cache_key:
            if prev.state != TaskState.DONE.value:
                return f"run {prev.run_id} ran it with the same key but it ended {prev.state}"
            return f"the result of run {prev.run_id} (same key) is gone: {prev.outputs.get('out', '')} is incomplete"
        changes = cachekey.diff(prev.basis.get("resolved", {}), t.basis.get("resolved", {}))
        return f"cache key differs from run {prev.run_id}: " + ("; ".join(changes) or "unknown change")

    def submit_ready(self, db):
        """READY tasks, oldest first, as many as fit under max_queued: their cache keys (a hit is
        done at once and takes no room), then one array per (run, stage, resources). Only the
        tasks that can be handled now are read: thousands of call tasks wait for room cheaply."""
        open_n = db.scalar(select(func.count(Attempt.id)).where(Attempt.end_reason == "")) or 0
        room = self.settings.max_queued - open_n
        if room <= 0:
            return
        # a task whose attempt has no job id yet (a master died while submitting it) waits for
        # recover_submissions: that submission may have reached the scheduler
        unsaved = set(db.scalars(select(Attempt.task_id).where(Attempt.end_reason == "", Attempt.job_id == "")))
        with db.no_autoflush:                  # one flush at the commit, not one per task looked at
            todo = self._ready_batch(db, room, unsaved)
        db.commit()
        if not todo:
            return
        groups = {}
        for t in todo[:room]:
            r = t.resources
            key = (t.run_id, t.stage, int(r.get("cpus", 1)), int(r.get("ranks", 1)), int(r.get("memory_mb", 0)),
                   int(r.get("mapped_mb", 0)))
            groups.setdefault(key, []).append(t)
        for (run_id, stage, cpus, ranks, mem, mapped), tasks in groups.items():
            self.submit_array(db, run_id, stage, cpus, ranks, mem, tasks, mapped)

    def _ready_batch(self, db, room, unsaved):
        """Up to `room` READY tasks to submit, oldest first (cache hits are done on the way)."""
        todo, last_id = [], 0
        for _ in range(4):                     # cache hits take no room: read on, a few batches at most
            batch = db.scalars(select(Task).join(Run).where(Task.state == TaskState.READY.value,
                                                            Run.state == RunState.RUNNING.value,
                                                            Run.cancel_requested.is_(False), Task.id > last_id)
                               .order_by(Task.id).limit(room + len(unsaved))).all()
            if not batch:
                break
            last_id = batch[-1].id
            for t in batch:
                if t.id in unsaved:
                    continue
                if not t.cache_key:
                    try:
                        self.resolve_key(db, t)
                    except storage.StorageError as e:
                        self.move(db, t, TaskState.FAILED, f"input unavailable: {e}")
                        continue
                    hit = db.get(CacheEntry, t.cache_key)
                    if hit is not None and pipeline.is_complete(hit.outputs):
                        t.outputs, t.result, t.cached = hit.outputs, hit.result, True
                        self.move(db, t, TaskState.DONE, f"cache hit: same key as task {hit.task_id}; not run "
                                  f"again (outputs {hit.outputs.get('out')})")
                        continue
                    add_event(db, t.run_id, t.id, "cache-miss", self.why_miss(db, t))
                todo.append(t)
            if len(todo) >= room:
                break
        return todo

    def submit_array(self, db, run_id, stage, cpus, ranks, mem, tasks, mapped=0):
        s = self.settings
        self.serial += 1
        name = f"gf{run_id}-{stage}-{int(time.time() * 1000) % 10 ** 9}{self.serial}"
        manifest = os.path.join(self.run_dir(run_id), "arrays", name)
        logs = os.path.join(self.run_dir(run_id), "logs")
        os.makedirs(manifest, exist_ok=True)
        os.makedirs(logs, exist_ok=True)
        spec = ArraySpec(name=name, count=len(tasks), argv=[s.python, "-m", "worker", "run", "--array", manifest],
                         manifest=manifest, log_dir=logs, cpus=cpus, ranks=ranks, memory_mb=mem,
                         vmem_mb=mem + mapped + VMEM_SLACK_MB if mem else 0, env=self.worker_env())
        atts = []
        for i, t in enumerate(tasks, 1):
            number = len(t.attempts) + 1
            t.outputs = {"out": pipeline.output_uri(s, t, t.run)}
            rdir = self.report_dir(t, number)
            os.makedirs(rdir, exist_ok=True)
            msg = TaskMessage(task=t.id, attempt=number, run=run_id, stage=t.stage, key=t.key, inputs=t.inputs,
                              outputs=t.outputs, report=rdir, region=t.region, params=t.params,
                              resources=t.resources, notify=self.notify_dir())
            tmp = os.path.join(manifest, f"{i}.json.tmp")
            with open(tmp, "w") as f:
                f.write(msg.to_json())
            os.replace(tmp, os.path.join(manifest, f"{i}.json"))
            a = Attempt(task_id=t.id, number=number, backend=self.backend.name, job_id="", state="submitting",
                        log=spec.log_path(i))
            db.add(a)
            atts.append(a)
        db.commit()
        try:
            ids = self.backend.submit(spec)
        except BackendError as e:
            # the attempts never ran: closed (their numbers are not used again), the tasks stay ready
            for a in atts:
                a.end_reason, a.ended = EndReason.CANCELLED.value, time.time()
                a.message = f"not submitted: {e}"
            add_event(db, run_id, None, "submit-error", f"submitting {name} ({len(tasks)} {stage} tasks) failed: "
                      f"{e}; will try again")
            db.commit()
            log.warning("submit %s: %s", name, e)
            return
        for a, t, jid in zip(atts, tasks, ids):
            a.job_id, a.state = jid, JobState.QUEUED.value
            self.move(db, t, TaskState.QUEUED, f"attempt {a.number} submitted to {self.backend.name} as job {jid} "
                      f"(array {name})")
        db.commit()

    def worker_env(self):
        env = {"GENEFARM_HEARTBEAT_SECONDS": str(self.settings.heartbeat_seconds)}
        for k in ("NUMBA_CACHE_DIR", "GENEFARM_NUMBA_CACHE_BASE", "AWS_ENDPOINT_URL", "GENEFARM_S3_ENDPOINT",
                  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "OSS_ENDPOINT",
                  "OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "PYTHONPATH", "GENEFARM_SCRATCH"):
            if os.environ.get(k):
                env[k] = os.environ[k]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    # ------------------------------------------------------------------ runs
    def finish_run(self, db, run):
        """A run with a failed task fails (the rest is cancelled); one whose tasks are all done,
        gather among them, is done."""
        counts = dict(db.execute(select(Task.state, func.count()).where(Task.run_id == run.id)
                                 .group_by(Task.state)).all())
        if counts.get(TaskState.FAILED.value):
            tasks = run.tasks
            failed = [t for t in tasks if t.state == TaskState.FAILED.value]
            for t in tasks:
                if TaskState(t.state) in ACTIVE:
                    jobs = [a.job_id for a in t.attempts if a.end_reason == "" and a.job_id]
                    if jobs:
                        try:
                            self.backend.cancel(jobs)
                        except BackendError as e:
                            log.warning("cancel: %s", e)
                    for a in t.attempts:
                        if a.end_reason == "":
                            a.end_reason, a.ended = EndReason.CANCELLED.value, time.time()
                if TaskState(t.state) not in TERMINAL:
                    self.move(db, t, TaskState.CANCELLED, f"cancelled: task {failed[0].key} failed")
            run.state, run.finished = RunState.FAILED.value, time.time()
            run.message = f"task {failed[0].key} failed: {failed[0].reason}"
            add_event(db, run.id, None, "failed", run.message)
            db.commit()
            return
        total = sum(counts.values())
        if total and counts.get(TaskState.DONE.value, 0) == total and db.scalar(
                select(func.count()).where(Task.run_id == run.id, Task.stage == "gather")):
            run.summary = dict(run.summary or {}, **self.summary(run))
            run.state, run.finished = RunState.DONE.value, time.time()
            run.message = "done"
            add_event(db, run.id, None, "done", "run done")
            db.commit()

    def summary(self, run):
        """QC (from gather), outputs, and time and core-seconds per stage (every attempt counted)."""
        g = next(t for t in run.tasks if t.stage == "gather")
        stages = {}
        for t in run.tasks:
            s = stages.setdefault(t.stage, {"tasks": 0, "cached": 0, "attempts": 0, "retries": 0, "preemptions": 0,
                                            "core_seconds": 0.0, "first_start": None, "last_end": None})
            s["tasks"] += 1
            s["cached"] += int(t.cached)
            s["retries"] += t.retries
            s["preemptions"] += t.preemptions
            for a in t.attempts:
                s["attempts"] += 1
                s["core_seconds"] += a.cpu_seconds or 0.0
                if a.started:
                    s["first_start"] = min(s["first_start"] or a.started, a.started)
                if a.ended:
                    s["last_end"] = max(s["last_end"] or a.ended, a.ended)
        for s in stages.values():
            s["wall_seconds"] = round(s["last_end"] - s["first_start"], 3) if s["first_start"] and s["last_end"] else 0
            s["core_seconds"] = round(s["core_seconds"], 3)
        qc = dict(g.result or {})
        out = g.outputs.get("out", "")
        for k in ("bam", "vcf"):           # the worker filled a staging directory; name the delivered files
            if qc.get(k) and out:
                qc[k] = storage.join(out, os.path.basename(qc[k]))
        return {"qc": qc, "outputs": g.outputs, "stages": stages,
                "wall_seconds": round(time.time() - run.created, 3)}
