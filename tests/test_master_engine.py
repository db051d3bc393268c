"""The master's engine: retries, preemptions, the cap, the cache, explain; on SQLite and PostgreSQL.

The scheduler is replaced at its seam (ScriptedBackend: a backend whose jobs "run" when polled,
doing what the test scripted per task and attempt, writing the worker's report and outputs the
way worker/run.py does). The real backends and worker are tested elsewhere against the real things.
"""
import glob
import json
import os
import shutil

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from gf_daemons import postgres_url  # noqa: F401  (fixture)
from master import explain, service
from master import settings as settings_mod
from master.backends.base import Backend, JobStatus
from master.engine import Engine
from master.states import IllegalTransition, JobState, TaskState, check_transition
from master.store import Attempt, Base, CacheEntry, Reference, Run, Task, open_store
from worker.message import write_json_atomic
from worker.contract import DONE_MARKER


class ScriptedBackend(Backend):
    """Jobs end on the next status() call as the script says for (task key, attempt):
    done | temporary | bad | crash (exit 1, no report) | signal (SIGKILL, no report) | sigterm
    (the worker's clean preempted report) | hang (stays running) | memory (the worker's report of
    a kernel stopped for memory) | oom (SIGKILL, no report, the scheduler says OUT_OF_MEMORY)."""
    name = "scripted"

    def __init__(self, script, index_prefix):
        self.script = script
        self.index_prefix = index_prefix
        self.jobs = {}
        self.n = 0
        self.max_open = 0
        self.cancelled = []

    def submit(self, spec):
        ids = []
        for i in range(1, spec.count + 1):
            with open(os.path.join(spec.manifest, f"{i}.json")) as f:
                msg = json.load(f)
            self.n += 1
            jid = f"s{self.n}"
            self.jobs[jid] = {"msg": msg, "state": JobState.QUEUED}
            ids.append(jid)
        open_jobs = sum(1 for j in self.jobs.values() if j["state"] in (JobState.QUEUED, JobState.RUNNING))
        self.max_open = max(self.max_open, open_jobs)
        return ids

    def submitted_messages(self, key):
        return [j["msg"] for j in self.jobs.values() if j["msg"]["key"] == key]

    def _outputs(self, msg, out):
        st = msg["stage"]
        if st == "index":
            for p in glob.glob(self.index_prefix + ".gfi.*"):
                shutil.copy(p, os.path.join(out, "ref" + p[len(self.index_prefix):]))
        elif st == "split":
            for c in ("c0000", "c0001"):
                for m in ("R1", "R2"):
                    open(os.path.join(out, f"chunk.{c}_{m}.fastq.gz"), "w").close()
        elif st == "align":
            open(os.path.join(out, "part.bam"), "w").close()
            open(os.path.join(out, "qual-counts.json"), "w").close()
        elif st == "call":
            for n in ("region.vcf.gz", "region.bam"):
                open(os.path.join(out, n), "w").close()

    def _finish(self, jid):
        j = self.jobs[jid]
        msg = j["msg"]
        what = self.script.get((msg["key"], msg["attempt"]), self.script.get(msg["key"], "done"))
        rep = {"task": msg["task"], "attempt": msg["attempt"], "stage": msg["stage"], "node": "fakenode",
               "started": 1.0, "ended": 2.0, "cpu_seconds": 1.5, "peak_mb": 10.0, "result": {}, "outputs": {}}
        if what == "hang":
            j["state"] = JobState.RUNNING
            return
        if what == "done":
            out = msg["outputs"]["out"]
            os.makedirs(out, exist_ok=True)
            self._outputs(msg, out)
            write_json_atomic(os.path.join(out, DONE_MARKER), {"task": msg["task"]})
            rep.update(outcome="done", exit_code=0, message="", outputs=msg["outputs"],
                       result={"reads": 10} if msg["stage"] != "gather" else {"reads": 40, "variants": 3})
            j.update(state=JobState.DONE, code=0)
        elif what in ("temporary", "bad", "sigterm"):
            outcome = {"temporary": "temporary", "bad": "bad_input", "sigterm": "preempted"}[what]
            code = {"temporary": 75, "bad": 2, "sigterm": 143}[what]
            rep.update(outcome=outcome, exit_code=code, message=f"scripted {what}")
            j.update(state=JobState.FAILED, code=code)
        elif what == "memory":
            # the worker stopped its kernel for going past the task's memory
            rep.update(outcome="failed", exit_code=1, message=f"killed for memory: used 900 of "
                       f"{msg['resources'].get('memory_mb')} MB asked for (the worker stopped it)",
                       memory={"limit_mb": msg["resources"].get("memory_mb"), "peak_private_mb": 900,
                               "exceeded": True})
            j.update(state=JobState.FAILED, code=1)
        elif what == "oom":
            # the scheduler killed it for memory, no report (Slurm's OUT_OF_MEMORY)
            j.update(state=JobState.FAILED, code=None, signal=9, report=False, raw="OUT_OF_MEMORY")
            return
        elif what == "crash":
            j.update(state=JobState.FAILED, code=1, report=False)
            return
        elif what == "signal":
            j.update(state=JobState.FAILED, code=None, signal=9, report=False)
            return
        write_json_atomic(os.path.join(msg["report"], "report.json"), rep)

    def status(self, ids):
        out = {}
        for jid in ids:
            j = self.jobs.get(jid)
            if j is None:
                out[jid] = JobStatus(JobState.UNKNOWN)
                continue
            if j["state"] in (JobState.QUEUED, JobState.RUNNING):
                self._finish(jid)
            out[jid] = JobStatus(j["state"], j.get("code"), j.get("signal"), "fakenode", raw=j.get("raw", j["state"].value))
        return out

    def cancel(self, ids):
        self.cancelled += list(ids)
        for jid in ids:
            if jid in self.jobs:
                self.jobs[jid]["state"] = JobState.CANCELLED


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gf.db"
    url = request.getfixturevalue("postgres_url")
    eng, _ = open_store(url)
    Base.metadata.drop_all(eng)
    eng.dispose()
    return url


@pytest.fixture
def farm(tmp_path, db_url, tiny, tiny_index, monkeypatch):
    import master.engine as engine_mod
    monkeypatch.setattr(engine_mod, "REPORT_GRACE", 0.0)
    s = settings_mod.load(str(tmp_path / "home"), db_url=db_url, max_retries=2, max_queued=100,
                          parallel_tasks=4)
    _, Session = open_store(s.db_url)

    def make(script=None, regions=4, name="s1"):
        be = ScriptedBackend(script or {}, tiny_index)
        eng = Engine(s, Session, be)
        with Session() as db:
            if not db.scalars(select(Reference)).first():
                service.add_reference(db, s, "chr20sim", tiny["ref"])
            _, run = service.submit_sample(db, s, {"name": name, "reference": "chr20sim", "r1": tiny["r1"],
                                                   "r2": tiny["r2"], "regions": regions})
        return eng, be, run.id
    return s, Session, make


def drive(eng, Session, run_id, ticks=60):
    for _ in range(ticks):
        eng.tick()
        with Session() as db:
            if db.get(Run, run_id).state != "running":
                return
    raise AssertionError("run did not finish")


def tasks_of(Session, run_id):
    with Session() as db:
        q = select(Task).where(Task.run_id == run_id).options(selectinload(Task.attempts))
        return {t.key: t for t in db.scalars(q)}


def test_a_clean_run_goes_through_every_stage(farm):
    s, Session, make = farm
    eng, be, rid = make(regions=4)
    drive(eng, Session, rid)
    ts = tasks_of(Session, rid)
    with Session() as db:
        run = db.get(Run, rid)
        assert run.state == "done", run.message
        assert len(run.summary["plan"]["regions"]) == 4
        assert set(run.summary["stages"]) == {"index", "split", "align", "call", "gather"}
        assert run.summary["qc"]["variants"] == 3
        atts = db.scalars(select(Attempt)).all()
    assert sorted(k for k in ts if k.startswith("align/")) == ["align/c0000", "align/c0001"]
    assert len([k for k in ts if k.startswith("call/")]) == 4
    assert all(t.state == "done" for t in ts.values())
    assert len(atts) == len(ts)                               # one attempt each, none doubled
    call0 = ts["call/r0000"]
    # a region's call names every chunk's part file through one manifest of the align tasks'
    # outputs, waits for the align stage as a whole, and names its region by rows of the plan's
    # BED: the store holds a path per chunk once, not per chunk and region
    aligns = sorted((t for k, t in ts.items() if k.startswith("align/")), key=lambda t: t.key)
    with open(call0.inputs["parts"]["manifest"]) as f:
        assert json.load(f)["uris"] == [t.outputs["out"] for t in aligns]
    assert call0.deps == ["align/*"] and call0.basis["inputs"]["parts"].startswith("stage:align:")
    rows = [ts[f"call/r{r:04d}"].params["rows"] for r in range(4)]
    assert rows[0][0] == 0 and all(a[1] + 1 == b[0] for a, b in zip(rows, rows[1:]))      # consecutive runs of pieces
    assert call0.region.startswith("chr20_10000001_12000000:1-")


def test_a_task_killed_for_memory_fails_says_so_and_is_retried_once_with_more(farm):
    s, Session, make = farm
    script = {("align/c0000", 1): "memory", ("align/c0000", 2): "done",
              ("align/c0001", 1): "oom", ("align/c0001", 2): "memory"}
    eng, be, rid = make(script)
    drive(eng, Session, rid)
    ts = tasks_of(Session, rid)
    a0, a1 = ts["align/c0000"], ts["align/c0001"]
    assert a0.state == "done" and a0.preemptions == 0 and a0.retries == 1
    asked = [m["resources"]["memory_mb"] for m in be.submitted_messages("align/c0000")]
    assert asked[1] == 2 * asked[0]                          # retried once with twice the memory
    assert a1.state == "failed" and a1.preemptions == 0       # never counted as a preemption
    assert "killed for memory" in a1.reason and "already been given more memory" in a1.reason
    with Session() as db:
        atts = db.scalars(select(Attempt).where(Attempt.task_id == a1.id).order_by(Attempt.number)).all()
        assert [x.end_reason for x in atts] == ["failed", "failed"]
        assert "OUT_OF_MEMORY" in atts[0].message and "used" in atts[0].message
        run = db.get(Run, rid)
        assert run.state == "failed"
    with Session() as db:
        text = explain.task(db, db.get(Task, a1.id))["text"]
    assert "killed for memory" in text and "retried with" in text


def test_failed_tasks_retry_up_to_the_limit_and_preemptions_are_free(farm):
    s, Session, make = farm
    script = {("split", 1): "temporary", ("split", 2): "crash", ("split", 3): "done",
              ("index", 1): "signal", ("index", 2): "sigterm", ("index", 3): "done",
              "align/c0000": "done"}
    eng, be, rid = make(script)
    drive(eng, Session, rid)
    ts = tasks_of(Session, rid)
    with Session() as db:
        assert db.get(Run, rid).state == "done"
    sp, ix = ts["split"], ts["index"]
    assert (sp.retries, sp.preemptions, len(sp.attempts)) == (2, 0, 3)
    assert (ix.retries, ix.preemptions, len(ix.attempts)) == (0, 2, 3)
    assert [a.end_reason for a in ix.attempts] == ["preempted", "preempted", "done"]
    assert [a.end_reason for a in sp.attempts] == ["failed", "failed", "done"]
    with Session() as db:
        text = explain.task(db, db.get(Task, sp.id))["text"]
    assert "retry 1 of 2" in text and "retry 2 of 2" in text and "exit 75" in text


def test_out_of_retries_fails_the_run_and_says_why(farm):
    s, Session, make = farm
    eng, be, rid = make({"split": "temporary"})
    drive(eng, Session, rid)
    ts = tasks_of(Session, rid)
    assert ts["split"].state == "failed" and len(ts["split"].attempts) == 3
    with Session() as db:
        run = db.get(Run, rid)
        assert run.state == "failed" and "out of retries" in run.message
        text = explain.task(db, db.get(Task, ts["split"].id))["text"]
    assert "out of retries (2 of 2 spent" in text


def test_bad_input_is_not_retried(farm):
    s, Session, make = farm
    eng, be, rid = make({"split": "bad", "index": "hang"})
    drive(eng, Session, rid)
    ts = tasks_of(Session, rid)
    assert ts["split"].state == "failed" and len(ts["split"].attempts) == 1
    assert "bad input" in ts["split"].reason
    assert ts["index"].state == "cancelled"                  # the rest of the run is stopped
    assert be.cancelled                                      # ... at the scheduler too


def test_the_cap_on_queued_array_tasks(farm):
    s, Session, make = farm
    s.max_queued = 3
    eng, be, rid = make(regions=9)
    drive(eng, Session, rid, ticks=200)
    with Session() as db:
        assert db.get(Run, rid).state == "done"
    assert be.max_open <= 3


def test_a_resubmission_reruns_nothing_and_says_so(farm, tmp_path):
    s, Session, make = farm
    eng, be, rid = make()
    drive(eng, Session, rid)
    with Session() as db:
        run2 = service.resubmit(db, s, "s1")
        rid2 = run2.id
        n_cache = db.scalar(select(func.count()).select_from(CacheEntry))
    before = be.n
    drive(eng, Session, rid2)
    ts = tasks_of(Session, rid2)
    assert be.n == before                                    # nothing submitted again
    assert all(t.state == "done" and t.cached and not t.attempts for t in ts.values())
    with Session() as db:
        assert db.scalar(select(func.count()).select_from(CacheEntry)) == n_cache
        text = explain.task(db, db.get(Task, ts["split"].id))["text"]
    assert "cache hit" in text


def test_explain_says_which_input_changed(farm, tmp_path, tiny):
    s, Session, make = farm
    # a sample whose R1 is a copy we then change: the resubmission's split must re-run, and say why
    r1 = str(tmp_path / "r1.fq.gz")
    shutil.copy(tiny["r1"], r1)
    eng, be, rid = make(name="s1")
    drive(eng, Session, rid)
    with Session() as db:
        _, run = service.submit_sample(db, s, {"name": "s2", "reference": "chr20sim", "r1": r1, "r2": tiny["r2"],
                                               "regions": 4})
        rid2 = run.id
    drive(eng, Session, rid2)
    with open(r1, "ab") as f:
        f.write(b"\n")
    with Session() as db:
        rid3 = service.resubmit(db, s, "s2").id
    drive(eng, Session, rid3)
    ts = tasks_of(Session, rid3)
    assert ts["index"].cached and not ts["split"].cached
    with Session() as db:
        text = explain.task(db, db.get(Task, ts["split"].id))["text"]
    assert f"cache key differs from run {rid2}: input r1 changed (sha256:" in text


def test_state_machine_refuses_illegal_moves():
    check_transition("pending", "ready")
    check_transition("running", "ready")                     # retry / requeue
    for old, new in (("done", "ready"), ("failed", "queued"), ("cancelled", "running"), ("pending", "running")):
        with pytest.raises(IllegalTransition):
            check_transition(old, new)
    assert {TaskState(x) for x in ("done", "failed", "cancelled")} == {
        s for s in TaskState if not check_allowed_any(s)}


def check_allowed_any(state):
    from master.states import ALLOWED
    return bool(ALLOWED[state])


def test_store_constraints_hold(farm):
    s, Session, make = farm
    eng, be, rid = make({"index": "hang", "split": "hang"})
    eng.tick()
    with Session() as db:
        t = db.scalars(select(Task).where(Task.key == "index")).first()
        assert len(t.attempts) == 1
        db.add(Attempt(task_id=t.id, number=1, backend="x"))       # (task, attempt) is unique
        with pytest.raises(IntegrityError):
            db.commit()
        db.rollback()
        ref = db.scalars(select(Reference)).first()
        ref.bases = 3_100_000_000                                   # a human genome fits
        db.commit()
        assert db.get(Reference, ref.id).bases == 3_100_000_000


def test_cancel_stops_the_run_at_the_scheduler(farm):
    s, Session, make = farm
    eng, be, rid = make({"index": "hang", "split": "hang"})
    eng.tick()
    eng.tick()
    with Session() as db:
        service.cancel_run(db, db.get(Run, rid))
    eng.tick()
    ts = tasks_of(Session, rid)
    assert {t.state for t in ts.values()} == {"cancelled"}
    assert all(a.end_reason == "cancelled" for t in ts.values() for a in t.attempts)
    assert sorted(be.cancelled) == sorted(a.job_id for t in ts.values() for a in t.attempts)
    with Session() as db:
        assert db.get(Run, rid).state == "cancelled"
        with pytest.raises(service.ApiError):
            service.cancel_run(db, db.get(Run, rid))            # only a running run can be cancelled


class MasterDied(Exception):
    pass


class DiesAfterSubmit(ScriptedBackend):
    """The scheduler takes the array; the master dies before it saves the job ids."""
    def submit(self, spec):
        self.manifest, self.orphans = spec.manifest, super().submit(spec)
        raise MasterDied("killed between qsub and saving the job ids")


@pytest.mark.parametrize("orphan_ran", [False, True])
def test_a_master_that_died_while_submitting(farm, capsys, orphan_ran):
    """The scheduler took an array but the master died before saving its job ids. The next
    master does not submit that task again at once (the job may be on its way); after the grace
    it supersedes the attempt without spending a retry, and the orphan job, when it starts, finds
    the master's report and runs nothing (the real worker, run as the scheduler would run it).
    An orphan that already reported is taken at its word."""
    from worker.run import main as worker_main
    s, Session, make = farm
    eng, be, rid = make()
    dying = DiesAfterSubmit({}, be.index_prefix)
    with pytest.raises(MasterDied):
        Engine(s, Session, dying).tick()
    (orphan,) = dying.orphans
    msg = dying.jobs[orphan]["msg"]
    if orphan_ran:
        dying._finish(orphan)
        with Session() as db:                          # restarted after the grace: recover_submissions
            for a in db.scalars(select(Attempt)):      # finds the orphan's report first
                a.submitted -= 120
            db.commit()
    eng.tick()                                         # the restarted master
    t = tasks_of(Session, rid)[msg["key"]]
    if orphan_ran:
        assert t.state == "done" and [a.end_reason for a in t.attempts] == ["done"]
    else:
        assert t.state == "ready" and len(t.attempts) == 1 and t.attempts[0].end_reason == ""
        with Session() as db:
            a = db.get(Attempt, t.attempts[0].id)
            a.submitted -= 120                         # past the grace
            db.commit()
        eng.tick()
        t = tasks_of(Session, rid)[msg["key"]]
        first = t.attempts[0]
        assert first.end_reason == "preempted" and "stopped while submitting" in first.message
        assert t.retries == 0 and len(t.attempts) == 2 and t.attempts[1].job_id
        capsys.readouterr()
        assert worker_main(["run", "--array", dying.manifest, "--index", "1"]) == 143
        assert "already reported (preempted); nothing to do" in capsys.readouterr().err
        assert not os.path.exists(msg["outputs"]["out"])
        with open(os.path.join(msg["report"], "report.json")) as f:
            assert json.load(f)["by"] == "master"
    drive(eng, Session, rid)
    with Session() as db:
        assert db.get(Run, rid).state == "done"
