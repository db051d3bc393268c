"""The REST API under /api/v1/ (JSON; `Authorization: Bearer TOKEN` on everything but /health).

    GET  /health                                 no token needed
    GET  /references            POST /references           {name, uri}
    GET  /samples               POST /samples              {name, reference, r1, r2, regions, output, params}
    GET  /samples/<name>        POST /samples/<name>/runs  (resubmit: a new run; done work is found in the cache)
    GET  /runs                  GET  /runs/<id>            POST /runs/<id>/cancel
    GET  /runs/<id>/tasks       GET  /runs/<id>/events
    GET  /tasks/<id>            GET  /tasks/<id>/attempts  GET /tasks/<id>/explain
    GET  /attempts/<id>/log[?tail=BYTES]                   (text/plain)
    POST /plan                  {reference, pairs | r1, r2 | lanes, regions}: the plan a sample would get
Errors: {"error": message} with 400 (bad input), 401 (no or bad token), 404, 409 (exists/conflict).
"""
import os

from flask import Blueprint, Response, current_app, g, jsonify, request
from sqlalchemy import select

from master import auth, explain, service
from master.store import Attempt, Event, Reference, Run, Sample, Task, task_counts

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def db():
    if "db" not in g:
        g.db = current_app.config["SESSIONMAKER"]()
    return g.db


@bp.teardown_app_request
def _close(_exc):
    s = g.pop("db", None)
    if s is not None:
        s.close()


@bp.before_request
def _auth():
    if request.endpoint == "api.health":
        return None
    h = request.headers.get("Authorization", "")
    tok = h[7:].strip() if h.lower().startswith("bearer ") else ""
    if not auth.verify(db(), tok):
        return jsonify(error="missing or invalid token: send 'Authorization: Bearer TOKEN' "
                             "(the token is in GENEFARM_HOME/token on the master)"), 401
    return None


@bp.errorhandler(service.ApiError)
def _api_error(e):
    return jsonify(error=e.message), e.status


def _json_body():
    data = request.get_json(silent=True)
    if data is None:
        raise service.ApiError(400, "the request body must be JSON (Content-Type: application/json)")
    return data


def _get(model, key, what):
    obj = db().get(model, key)
    if obj is None:
        raise service.ApiError(404, f"no {what} {key}")
    return obj


@bp.post("/plan")
def plan():
    return jsonify(service.plan_sample(db(), current_app.config["SETTINGS"], _json_body()))


@bp.get("/health")
def health():
    return jsonify(ok=True)


@bp.get("/references")
def references():
    return jsonify([r.to_dict() for r in db().scalars(select(Reference).order_by(Reference.id))])


@bp.post("/references")
def add_reference():
    d = _json_body()
    ref = service.add_reference(db(), current_app.config["SETTINGS"], d.get("name"), d.get("uri"))
    return jsonify(ref.to_dict()), 201


@bp.get("/samples")
def samples():
    return jsonify([s.to_dict() for s in db().scalars(select(Sample).order_by(Sample.id))])


@bp.post("/samples")
def submit():
    s, run = service.submit_sample(db(), current_app.config["SETTINGS"], _json_body())
    return jsonify(sample=s.to_dict(), run=run.to_dict(task_counts(db(), run.id))), 201


@bp.get("/samples/<name>")
def sample(name):
    s = db().scalars(select(Sample).where(Sample.name == name)).first()
    if s is None:
        raise service.ApiError(404, f"unknown sample {name!r}")
    return jsonify(s.to_dict())


@bp.post("/samples/<name>/runs")
def resubmit(name):
    run = service.resubmit(db(), current_app.config["SETTINGS"], name)
    return jsonify(run.to_dict(task_counts(db(), run.id))), 201


@bp.get("/runs")
def runs():
    return jsonify([r.to_dict(task_counts(db(), r.id)) for r in db().scalars(select(Run).order_by(Run.id))])


@bp.get("/runs/<int:rid>")
def run(rid):
    r = _get(Run, rid, "run")
    d = r.to_dict(task_counts(db(), r.id))
    d["retries"] = sum(t.retries for t in r.tasks)
    d["preemptions"] = sum(t.preemptions for t in r.tasks)
    return jsonify(d)


@bp.post("/runs/<int:rid>/cancel")
def cancel(rid):
    r = _get(Run, rid, "run")
    service.cancel_run(db(), r)
    return jsonify(r.to_dict(task_counts(db(), r.id)))


@bp.get("/runs/<int:rid>/tasks")
def run_tasks(rid):
    _get(Run, rid, "run")
    return jsonify([t.to_dict() for t in db().scalars(select(Task).where(Task.run_id == rid).order_by(Task.id))])


@bp.get("/runs/<int:rid>/events")
def run_events(rid):
    _get(Run, rid, "run")
    return jsonify([e.to_dict() for e in db().scalars(select(Event).where(Event.run_id == rid).order_by(Event.id))])


@bp.get("/tasks/<int:tid>")
def task(tid):
    return jsonify(_get(Task, tid, "task").to_dict())


@bp.get("/tasks/<int:tid>/attempts")
def task_attempts(tid):
    return jsonify([a.to_dict() for a in _get(Task, tid, "task").attempts])


@bp.get("/tasks/<int:tid>/explain")
def task_explain(tid):
    return jsonify(explain.task(db(), _get(Task, tid, "task")))


@bp.get("/attempts/<int:aid>/log")
def attempt_log(aid):
    a = _get(Attempt, aid, "attempt")
    tail = request.args.get("tail", type=int)
    if not a.log or not os.path.exists(a.log):
        raise service.ApiError(404, f"attempt {aid} has no log yet ({a.log or 'not submitted'})")
    with open(a.log, "rb") as f:
        if tail:
            f.seek(max(0, os.path.getsize(a.log) - tail))
        data = f.read()
    return Response(data, mimetype="text/plain")
