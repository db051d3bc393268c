"""What the API does, apart from HTTP: register references, submit samples, resubmit, cancel.

Every check happens before anything is written, and what is written goes in one transaction,
so bad input leaves nothing half-made. Errors are ApiError(status, message): what is wrong,
where, and what to do.
"""
import hashlib
import os
import re
import tempfile

import numpy as np

from sqlalchemy import select

from master import pipeline, planner
from master.states import RunState
from master.store import Reference, Run, Sample, add_event
from worker import storage

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _check_uri(what, uri):
    if not isinstance(uri, str) or not uri:
        raise ApiError(400, f"{what}: missing; give a path, file://, s3:// or oss:// URI")
    try:
        storage.stat(uri)
    except storage.StorageError as e:
        status = 503 if e.kind == "temporary" else 400
        raise ApiError(status, f"{what}: {e}") from None


def scan_fasta(path):
    """(sha256 of the file, contigs, non-N bases, layout) of a FASTA (plain or gzip/bgzip), streamed
    and checked by the kernels' reader (a human genome in well under a minute, in bounded memory);
    the layout (names, lengths, kinds, N runs: master.planner) is what plans are made from."""
    from kernels.errors import InputError
    from kernels.fasta import stream_fasta
    from kernels.index import gap_runs, kind_of
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    layout, bases, at, runs, still = [], 0, 0, [], -1
    buf = np.empty((1024, 2), np.int64)
    try:
        for kind, a, _ in stream_fasta(path):
            if kind == "seq":
                bases += int(np.count_nonzero(a < 4))
                n, st = gap_runs(a, at, still, buf)
                if n > len(buf):
                    buf = np.empty((n, 2), np.int64)
                    n, st = gap_runs(a, at, still, buf)
                runs += buf[:n].tolist()
                still = st
                at += len(a)
            elif kind == "start":
                at, runs, still = 0, [], -1
            elif kind == "end":
                if still >= 0:
                    runs.append([still, at])
                layout.append([a.name, int(a.length), kind_of(a.name), runs])
    except InputError as e:
        raise ApiError(400, f"not a FASTA file genefarm can read: {e}") from None
    return h.hexdigest(), len(layout), bases, layout


def add_reference(db, settings, name, uri):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ApiError(400, f"reference name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    if db.scalars(select(Reference).where(Reference.name == name)).first():
        raise ApiError(409, f"reference {name!r} already exists; pick another name")
    _check_uri("reference", uri)
    if storage.is_remote(uri):
        with tempfile.TemporaryDirectory(dir=settings.dir("tmp")) as d:
            sha, n, bases, layout = scan_fasta(storage.fetch(uri, d, "ref.fa"))
    else:
        uri = os.path.abspath(storage.local_path(uri))
        sha, n, bases, layout = scan_fasta(uri)
    ref = Reference(name=name, uri=uri, sha256=sha, contigs=n, bases=bases, layout=layout)
    db.add(ref)
    db.commit()
    return ref


def region_range(settings, ref):
    """Call shards a sample of this reference may ask for (0, the default, sizes them by its reads;
    small contigs are packed together, so fewer shards than contigs is fine)."""
    hi = max(1, min(settings.max_regions, ref.bases // planner.MIN_REGION_BASES))
    return 1, hi


def submit_sample(db, settings, data):
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ApiError(400, f"sample name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    if db.scalars(select(Sample).where(Sample.name == name)).first():
        raise ApiError(409, f"sample {name!r} already exists; pick another name, or resubmit it with "
                            f"`genefarm submit --resubmit {name}`")
    refname = data.get("reference")
    ref = db.scalars(select(Reference).where(Reference.name == refname)).first()
    if ref is None:
        known = ", ".join(r.name for r in db.scalars(select(Reference))) or "none"
        raise ApiError(404, f"unknown reference {refname!r} (known: {known}); register it first with "
                            f"`genefarm reference add NAME FASTA`")
    lanes = _lanes(data, name)
    r1, r2 = lanes[0]["r1"], lanes[0]["r2"]
    regions = data.get("regions", settings.default_regions)
    lo, hi = region_range(settings, ref)
    if isinstance(regions, bool) or not isinstance(regions, int) or not (regions == 0 or lo <= regions <= hi):
        raise ApiError(400, f"regions={regions!r}: out of range for reference {ref.name} ({ref.contigs} contigs, "
                            f"{ref.bases:,} non-N bases): give 0 (sized by the sample's reads) or a whole number "
                            f"from {lo} to {hi}")
    output = data.get("output") or ""
    if output and storage.scheme(output) not in ("", "file", "s3", "oss"):
        raise ApiError(400, f"output {output!r}: give a directory path, file://, s3:// or oss:// URI")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise ApiError(400, "params must be a JSON object")
    cp = params.get("chunk_pairs")
    if cp is not None and (not isinstance(cp, int) or cp < 1000):
        raise ApiError(400, f"chunk_pairs={cp!r}: give a whole number of read pairs, at least 1000")
    ranks = params.get("ranks", 1)
    if not isinstance(ranks, int) or not 1 <= ranks <= 256:
        raise ApiError(400, f"ranks={ranks!r}: give a whole number of MPI ranks from 1 to 256")
    _, _, misfit = plan_of(db, settings, ref, lanes, regions)
    if misfit:
        raise ApiError(400, f"sample {name!r} cannot run as planned: {misfit}; see the plan with "
                            f"`genefarm plan --reference {ref.name} R1 R2`")
    s = Sample(name=name, reference=ref, r1=r1, r2=r2, lanes=lanes, regions=regions, output=output, params=params)
    db.add(s)
    run = new_run(db, settings, s)
    db.commit()
    return s, run


LANE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _lane_files(what, r1, r2):
    _check_uri(f"{what}r1", r1)
    _check_uri(f"{what}r2", r2)
    if not storage.is_remote(r1):
        r1 = os.path.abspath(storage.local_path(r1))
    if not storage.is_remote(r2):
        r2 = os.path.abspath(storage.local_path(r2))
    if r1 == r2:
        raise ApiError(400, f"{what}r1 and r2 are the same file ({r1}); give the two files of the pair")
    return r1, r2


def _lanes(data, name):
    """The sample's lanes from `lanes` ([{id, r1, r2}, ...]) or from r1/r2 (one lane named as the
    sample), each checked: files there and readable, ids unique and fit for a read group."""
    lanes = data.get("lanes")
    if lanes is None:
        r1, r2 = _lane_files("", data.get("r1"), data.get("r2"))
        return [{"id": name, "r1": r1, "r2": r2}]
    if data.get("r1") or data.get("r2"):
        raise ApiError(400, "give either r1/r2 (one lane) or lanes, not both")
    if not isinstance(lanes, list) or not lanes or not all(isinstance(x, dict) for x in lanes):
        raise ApiError(400, "lanes: give a list of {id, r1, r2}, one per lane")
    out, seen = [], {}
    for i, lane in enumerate(lanes, 1):
        lid = lane.get("id") or f"L{i}"
        if not isinstance(lid, str) or not LANE_RE.match(lid):
            raise ApiError(400, f"lane {i}: id {lid!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        if lid in seen:
            raise ApiError(400, f"lane {i}: id {lid!r} is also lane {seen[lid]}'s; every lane needs its own")
        seen[lid] = i
        r1, r2 = _lane_files(f"lane {lid}: ", lane.get("r1"), lane.get("r2"))
        out.append({"id": lid, "r1": r1, "r2": r2})
    files = [f for x in out for f in (x["r1"], x["r2"])]
    dup = next((f for f in files if files.count(f) > 1), None)
    if dup:
        raise ApiError(400, f"lanes: {dup} is given twice; each lane has files of its own")
    return out


def reference_layout(db, settings, ref):
    """A reference's layout, scanned now (and kept) when the store was made before layouts."""
    if not ref.layout:
        if storage.is_remote(ref.uri):
            with tempfile.TemporaryDirectory(dir=settings.dir("tmp")) as d:
                ref.layout = scan_fasta(storage.fetch(ref.uri, d, "ref.fa"))[3]
        else:
            ref.layout = scan_fasta(storage.local_path(ref.uri))[3]
        db.commit()
    return ref.layout


def plan_sample(db, settings, data):
    """The plan a sample would get (POST /plan, `genefarm plan`): {reference, pairs} or
    {reference, r1 (and r2), or lanes}, and regions (0: sized by the reads)."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    refname = data.get("reference")
    ref = db.scalars(select(Reference).where(Reference.name == refname)).first()
    if ref is None:
        known = ", ".join(r.name for r in db.scalars(select(Reference))) or "none"
        raise ApiError(404, f"unknown reference {refname!r} (known: {known}); register it first with "
                            f"`genefarm reference add NAME FASTA`")
    pairs = data.get("pairs")
    lanes = None
    if pairs is None:
        lanes = _lanes(data, "plan") if (data.get("lanes") or data.get("r1")) else None
        if not lanes:
            raise ApiError(400, "give pairs (the sample's read pairs) or its FASTQ files (r1, r2 or lanes)")
    elif isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ApiError(400, f"pairs={pairs!r}: give the sample's read pairs, a whole number of at least 1")
    regions = data.get("regions", 0)
    lo, hi = region_range(settings, ref)
    if isinstance(regions, bool) or not isinstance(regions, int) or not (regions == 0 or lo <= regions <= hi):
        raise ApiError(400, f"regions={regions!r}: give 0 (sized by the reads) or a whole number from {lo} to {hi}")
    p, res, fits = plan_of(db, settings, ref, lanes, regions, pairs)
    out = p.to_dict(res)
    out["reference"] = ref.name
    out["fits"] = fits
    return out


def plan_of(db, settings, ref, lanes, regions, pairs=None):
    """(plan, resources per stage, None or why it cannot fit) for a sample of these lanes (its
    read pairs estimated from the R1 files' sizes) or of `pairs` pairs."""
    from master import resources
    if pairs is None:
        pairs = sum(planner.estimate_pairs(None, storage.stat(x["r1"])["size"]) if storage.is_remote(x["r1"])
                    else planner.estimate_pairs(storage.local_path(x["r1"])) for x in lanes)
    p = planner.make_plan(planner.contigs_of_layout(reference_layout(db, settings, ref)), pairs,
                          regions=regions or None, lanes=len(lanes) if lanes else 1,
                          parallel=planner.parallel_of(settings))
    res = resources.for_plan(p, settings, ref.bases)
    return p, res, resources.check(res, settings)


def new_run(db, settings, sample):
    run = Run(sample=sample, backend=settings.backend, state=RunState.RUNNING.value, summary={})
    db.add(run)
    db.flush()
    pipeline.start(db, settings, run)
    add_event(db, run.id, None, "submitted", f"run {run.id} of sample {sample.name} submitted "
                                             f"({sample.regions} regions, backend {settings.backend})")
    return run


def resubmit(db, settings, name):
    s = db.scalars(select(Sample).where(Sample.name == name)).first()
    if s is None:
        raise ApiError(404, f"unknown sample {name!r}")
    active = [r for r in s.runs if r.state == RunState.RUNNING.value]
    if active:
        raise ApiError(409, f"sample {name!r} has a run in progress (run {active[0].id}); cancel it first")
    for lane in s.lane_list:
        _check_uri(f"lane {lane['id']}: r1", lane["r1"])
        _check_uri(f"lane {lane['id']}: r2", lane["r2"])
    run = new_run(db, settings, s)
    db.commit()
    return run


def cancel_run(db, run):
    if run.state != RunState.RUNNING.value:
        raise ApiError(409, f"run {run.id} is {run.state}; only a running run can be cancelled")
    run.cancel_requested = True
    add_event(db, run.id, None, "cancel", "cancel requested")
    db.commit()
