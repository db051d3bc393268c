"""The REST API and the CLI over it: tokens, bad input (4xx, exit 2, nothing half-made), --json."""
import json
import os
import shutil
import stat
import threading

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from master import cli
from master import settings as settings_mod
from master.app import create_app
from master.auth import ensure_token
from master.store import Run, Sample, Task


@pytest.fixture
def api(tmp_path, tiny):
    s = settings_mod.load(str(tmp_path / "home"), parallel_tasks=4)     # as on a cluster: tiny makes 4 chunks
    app = create_app(s)
    with app.config["SESSIONMAKER"]() as db:
        token = ensure_token(s, db)
    c = app.test_client()
    h = {"Authorization": f"Bearer {token}"}
    r = c.post("/api/v1/references", json={"name": "chr20sim", "uri": tiny["ref"]}, headers=h)
    assert r.status_code == 201, r.json
    return app, c, h, s


def count(app, model):
    with app.config["SESSIONMAKER"]() as db:
        return db.scalar(select(func.count()).select_from(model))


def sample(tiny, **kw):
    d = {"name": "tiny", "reference": "chr20sim", "r1": tiny["r1"], "r2": tiny["r2"], "regions": 4}
    d.update(kw)
    return d


def test_token_is_required_and_stored_hashed(api, tmp_path):
    app, c, h, s = api
    assert c.get("/api/v1/health").status_code == 200
    for bad in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer gf1_wrong"},
                {"Authorization": "Basic abc"}):
        r = c.get("/api/v1/samples", headers=bad)
        assert r.status_code == 401 and "token" in r.json["error"]
    assert c.get("/api/v1/samples", headers=h).status_code == 200
    token = h["Authorization"][7:]
    assert stat.S_IMODE(os.stat(s.token_file).st_mode) == 0o600
    with open(s.db_path, "rb") as f:
        assert token.encode() not in f.read()               # only the hash is in the store


def test_submit_makes_a_run_with_its_first_tasks(api, tiny):
    app, c, h, s = api
    r = c.post("/api/v1/samples", json=sample(tiny), headers=h)
    assert r.status_code == 201, r.json
    run = r.json["run"]
    assert run["state"] == "running" and run["tasks"]["pending"] == 2
    tasks = c.get(f"/api/v1/runs/{run['id']}/tasks", headers=h).json
    assert [t["key"] for t in tasks] == ["index", "split"]
    assert c.get("/api/v1/samples/tiny", headers=h).json["runs"] == [run["id"]]
    ex = c.get(f"/api/v1/tasks/{tasks[0]['id']}/explain", headers=h).json
    assert "task" in ex and "pending" in ex["text"]


def test_a_lane_of_one_chunk_is_aligned_from_its_files_without_a_split(api, tiny, tiny_index, tmp_path):
    """When the backend runs one task at a time, the shipped sample is one chunk: no split task (a
    pass over the reads that would only copy them); the align task reads the lane's files, named
    in its cache key by their content, and the plan uses the pairs estimated from R1."""
    from master.engine import Engine
    app, c, h, s = api
    s.parallel_tasks = 1
    r = c.post("/api/v1/samples", json=sample(tiny), headers=h)
    assert r.status_code == 201, r.json
    rid = r.json["run"]["id"]
    with app.config["SESSIONMAKER"]() as db:
        assert sorted(t.key for t in db.scalars(select(Task))) == ["index"]
        run = db.get(Run, rid)
        est = run.summary["direct"]["tiny"]
        assert abs(est - 20000) < 1000
        out = tmp_path / "index-out"                 # an index task's output: ref.gfi.*
        out.mkdir()
        for f in os.listdir(os.path.dirname(tiny_index)):
            if f.startswith(os.path.basename(tiny_index) + ".gfi."):
                os.symlink(os.path.join(os.path.dirname(tiny_index), f), out / ("ref" + f[len("chr20sim"):]))
        idx = db.scalars(select(Task)).one()
        idx.state, idx.outputs, idx.cache_key = "done", {"out": str(out)}, "k" * 64
        db.commit()
        from master import pipeline
        eng = Engine(s, app.config["SESSIONMAKER"], None)
        assert pipeline.advance(db, eng, run) == 1
        db.commit()
        al = db.scalars(select(Task).where(Task.stage == "align")).one()
        assert al.key == "align/c0000" and al.deps == ["index"]
        assert al.inputs["r1"] == tiny["r1"] and al.basis["inputs"]["r1"] == f"file:{tiny['r1']}"
        assert run.summary["plan"]["pairs"] == est


@pytest.mark.parametrize("change,status,words", [
    ({"reference": "hg99"}, 404, "unknown reference 'hg99'"),
    ({"r1": "/nonexistent/r1.fq.gz"}, 400, "r1: /nonexistent/r1.fq.gz: does not exist"),
    ({"r2": "s3://"}, 400, "r2"),
    ({"regions": -1}, 400, "out of range"),
    ({"regions": "8"}, 400, "give 0 (sized by the sample's reads) or a whole number from 1 to"),
    ({"regions": 100000}, 400, "out of range"),
    ({"regions": "8"}, 400, "whole number"),
    ({"name": "../etc"}, 400, "sample name"),
    ({"params": {"ranks": 0}}, 400, "ranks"),
])
def test_bad_submissions_are_refused_and_leave_nothing(api, tiny, change, status, words):
    app, c, h, s = api
    r = c.post("/api/v1/samples", json=sample(tiny, **change), headers=h)
    assert r.status_code == status, r.json
    assert words in r.json["error"]
    assert count(app, Sample) == 0 and count(app, Run) == 0 and count(app, Task) == 0


def test_unreadable_input_is_refused(api, tiny, tmp_path):
    if os.geteuid() == 0:
        # root reads anything: make the "file" a directory instead, which no one can read as FASTQ
        bad = tmp_path / "r1.fq.gz"
        bad.mkdir()
    else:
        bad = tmp_path / "r1.fq.gz"
        shutil.copy(tiny["r1"], bad)
        os.chmod(bad, 0)
    app, c, h, s = api
    r = c.post("/api/v1/samples", json=sample(tiny, r1=str(bad)), headers=h)
    assert r.status_code == 400 and str(bad) in r.json["error"]
    assert count(app, Sample) == 0


def test_duplicate_sample_name_is_a_conflict(api, tiny):
    app, c, h, s = api
    assert c.post("/api/v1/samples", json=sample(tiny), headers=h).status_code == 201
    r = c.post("/api/v1/samples", json=sample(tiny), headers=h)
    assert r.status_code == 409 and "already exists" in r.json["error"]
    assert count(app, Sample) == 1 and count(app, Run) == 1


def test_bad_references_are_refused(api, tmp_path):
    app, c, h, s = api
    notfa = tmp_path / "x.fa"
    notfa.write_text("hello\n")
    for body, words in (({"name": "x", "uri": str(notfa)}, "not a FASTA"),
                        ({"name": "y", "uri": str(tmp_path / "none.fa")}, "does not exist"),
                        ({"name": "chr20sim", "uri": str(notfa)}, "already exists")):
        r = c.post("/api/v1/references", json=body, headers=h)
        assert r.status_code in (400, 409) and words in r.json["error"], r.json
    assert [x["name"] for x in c.get("/api/v1/references", headers=h).json] == ["chr20sim"]


def test_cancel_and_resubmit_rules(api, tiny):
    app, c, h, s = api
    run = c.post("/api/v1/samples", json=sample(tiny), headers=h).json["run"]
    r = c.post("/api/v1/samples/tiny/runs", headers=h)
    assert r.status_code == 409 and "in progress" in r.json["error"]
    assert c.post(f"/api/v1/runs/{run['id']}/cancel", headers=h).status_code == 200
    assert c.post("/api/v1/runs/999/cancel", headers=h).status_code == 404


# ---------------------------------------------------------------- the CLI over a live server
@pytest.fixture
def server(api):
    app, c, h, s = api
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_port}", h["Authorization"][7:], s
    srv.shutdown()


def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_exit_codes_and_json(server, tiny, capsys):
    url, token, s = server
    base = ["--url", url, "--token", token, "--home", s.home]
    rc, out, err = run_cli(capsys, "submit", "tiny", tiny["r1"], tiny["r2"], "--reference", "chr20sim",
                           "--regions", "4", "--json", *base)
    assert rc == 0, err
    run = json.loads(out)["run"]
    rc, out, err = run_cli(capsys, "submit", "tiny", tiny["r1"], tiny["r2"], "--reference", "chr20sim", *base)
    assert rc == 2 and "already exists" in err and out == ""
    rc, out, err = run_cli(capsys, "submit", "other", tiny["r1"], "/no/such.fq", "--reference", "chr20sim", *base)
    assert rc == 2 and "does not exist" in err
    rc, out, err = run_cli(capsys, "--json", "status", str(run["id"]), *base)
    assert rc == 0 and json.loads(out)["state"] == "running"
    rc, out, err = run_cli(capsys, "status", *base, "--token", "gf1_bad")
    assert rc == 2 and "token" in err
    rc, out, err = run_cli(capsys, "status", "--url", "http://127.0.0.1:9", "--token", token, "--home", s.home)
    assert rc == 1 and "cannot reach the master" in err
    rc, out, err = run_cli(capsys, "explain", "1", "--json", *base)
    assert rc == 0 and json.loads(out)["task"]["key"] == "index"
    rc, out, err = run_cli(capsys, "cancel", str(run["id"]), *base)
    assert rc == 0 and "cancel requested" in out


def test_lanes_are_checked_and_make_a_split_each(api, tiny, tmp_path):
    app, c, h, s = api
    other = tmp_path / "b_R1.fq.gz"
    shutil.copyfile(tiny["r1"], other)
    shutil.copyfile(tiny["r2"], tmp_path / "b_R2.fq.gz")
    lanes = [{"id": "L001", "r1": tiny["r1"], "r2": tiny["r2"]},
             {"id": "L002", "r1": str(other), "r2": str(tmp_path / "b_R2.fq.gz")}]
    bad = [
        ([dict(lanes[0]), dict(lanes[1], id="L001")], "is also lane 1's"),
        ([dict(lanes[0]), dict(lanes[1], r2=tiny["r2"])], "is given twice"),
        ([dict(lanes[0], id="bad id")], "letters, digits"),
        ([dict(lanes[0]), dict(lanes[1], r1=str(tmp_path / "none.fq"))], "lane L002: r1"),
        ([], "one per lane"),
    ]
    for ls, words in bad:
        r = c.post("/api/v1/samples", json={"name": "lanes", "reference": "chr20sim", "lanes": ls, "regions": 4},
                   headers=h)
        assert r.status_code in (400, 404) and words in r.json["error"], (ls, r.json)
    r = c.post("/api/v1/samples", json={"name": "lanes", "reference": "chr20sim", "r1": tiny["r1"], "lanes": lanes},
               headers=h)
    assert r.status_code == 400 and "not both" in r.json["error"]
    assert count(app, Sample) == 0 and count(app, Task) == 0
    r = c.post("/api/v1/samples", json={"name": "lanes", "reference": "chr20sim", "lanes": lanes, "regions": 4},
               headers=h)
    assert r.status_code == 201, r.json
    assert r.json["sample"]["lanes"] == lanes
    with app.config["SESSIONMAKER"]() as db:
        keys = sorted(t.key for t in db.scalars(select(Task)))
    assert keys == ["index", "split/L001", "split/L002"]


def test_a_store_made_before_lanes_gets_the_column(tmp_path):
    """A store whose samples table has no lanes column (made by an earlier version) is upgraded."""
    import sqlalchemy as sa
    url = f"sqlite:///{tmp_path / 'old.db'}"
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE samples (id INTEGER PRIMARY KEY, name VARCHAR(200), reference_id INTEGER, "
                             "r1 TEXT, r2 TEXT, regions INTEGER, output TEXT, params JSON, created FLOAT)"))
    from master.store import open_store
    eng2, _ = open_store(url)
    assert "lanes" in {c["name"] for c in sa.inspect(eng2).get_columns("samples")}


def test_plan_before_anything_runs(api, tiny):
    app, c, h, s = api
    r = c.post("/api/v1/plan", json={"reference": "chr20sim", "pairs": 400_000}, headers=h)
    assert r.status_code == 200, r.json
    p = r.json
    assert set(p) >= {"regions", "tasks", "memory_mb", "cores", "chunk_pairs"}
    assert p["tasks"]["call"] == len(p["regions"]) in (2, 3) and p["tasks"]["align"] == 4
    assert all(set(x) >= {"intervals", "calls"} for x in p["regions"]) and p["fits"] is None
    iv = [tuple(i) for x in p["regions"] for i in x["intervals"]]
    assert iv[0][:2] == ("chr20_10000001_12000000", 0) and iv[-1][2] == 500000
    # from the files: the pairs estimated from R1
    r = c.post("/api/v1/plan", json={"reference": "chr20sim", "r1": tiny["r1"], "r2": tiny["r2"]}, headers=h)
    assert r.status_code == 200 and r.json["pairs"] == 20000
    # a plan that does not fit is said so, with what to change
    s.node_memory_mb = 500
    r = c.post("/api/v1/plan", json={"reference": "chr20sim", "pairs": 400_000_000, "regions": 2}, headers=h)
    assert r.status_code == 200 and "would need" in r.json["fits"] and "--regions" in r.json["fits"]
    for body, words in (({"reference": "nope", "pairs": 5}, "unknown reference"),
                        ({"reference": "chr20sim"}, "give pairs"),
                        ({"reference": "chr20sim", "pairs": 0}, "at least 1")):
        r = c.post("/api/v1/plan", json=body, headers=h)
        assert r.status_code in (400, 404) and words in r.json["error"], r.json


def test_a_sample_whose_plan_cannot_fit_is_refused_before_anything_runs(api, tiny):
    """Submitting a sample whose tasks would need more memory than a node gives is refused with
    what to change, and nothing is stored: no sample, no run, no task."""
    app, c, h, s = api
    s.node_memory_mb = 500
    r = c.post("/api/v1/samples", json={"name": "toobig", "reference": "chr20sim", "r1": tiny["r1"],
                                        "r2": tiny["r2"]}, headers=h)
    assert r.status_code == 400, r.json
    assert "cannot run as planned" in r.json["error"] and "500 MB" in r.json["error"]
    assert "genefarm plan" in r.json["error"]
    with app.config["SESSIONMAKER"]() as db:
        assert db.scalars(select(Sample)).all() == [] and db.scalars(select(Run)).all() == []
        assert db.scalars(select(Task)).all() == []
    s.node_memory_mb = 0
    r = c.post("/api/v1/samples", json={"name": "fits", "reference": "chr20sim", "r1": tiny["r1"],
                                        "r2": tiny["r2"]}, headers=h)
    assert r.status_code == 201, r.json


@pytest.mark.parametrize("prog", ["genefarm", "bcc"])
def test_both_clis_share_exit_codes_and_ctrl_c_is_130(prog, monkeypatch, capsys):
    """One plumbing (bcc/cliplumbing.py) for both command lines: bad input 2, failure 1, Ctrl-C 130."""
    import bcc.cli as bcli
    from bcc.errors import BadInput, BccError

    def boom(exc):
        def fn(args):
            raise exc
        return fn
    if prog == "genefarm":
        mod, argv, cases = cli, ["status"], [(KeyboardInterrupt(), 130), (ValueError("no"), 2)]
        target = "cmd_status"
    else:
        mod, argv, cases = bcli, ["status"], [(KeyboardInterrupt(), 130), (BadInput("no"), 2), (BccError("x"), 1)]
        target = "cmd_status"
    for exc, code in cases:
        monkeypatch.setattr(mod, target, boom(exc))
        assert mod.main(argv) == code, exc
        err = capsys.readouterr().err
        assert ("interrupted" in err) if code == 130 else (str(exc) in err)
