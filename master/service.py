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
    """(sha256 of the file, contigs, non-N bases) of a FASTA (plain or gzip/bgzip), streamed and
    checked by the kernels' reader (a human genome in well under a minute, in bounded memory)."""
    from kernels.errors import InputError
    from kernels.fasta import stream_fasta
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    contigs, bases = 0, 0
    try:
        for kind, a, _ in stream_fasta(path):
            if kind == "seq":
                bases += int(np.count_nonzero(a < 4))
            elif kind == "end":
                contigs += 1
    except InputError as e:
        raise ApiError(400, f"not a FASTA file genefarm can read: {e}") from None
    return h.hexdigest(), contigs, bases


def add_reference(db, settings, name, uri):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ApiError(400, f"reference name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    if db.scalars(select(Reference).where(Reference.name == name)).first():
        raise ApiError(409, f"reference {name!r} already exists; pick another name")
    _check_uri("reference", uri)
    if storage.is_remote(uri):
        with tempfile.TemporaryDirectory(dir=settings.dir("tmp")) as d:
            sha, n, bases = scan_fasta(storage.fetch(uri, d, "ref.fa"))
    else:
        uri = os.path.abspath(storage.local_path(uri))
        sha, n, bases = scan_fasta(uri)
    ref = Reference(name=name, uri=uri, sha256=sha, contigs=n, bases=bases)
    db.add(ref)
    db.commit()
    return ref


def region_range(settings, ref):
    lo = ref.contigs
    hi = max(lo, min(settings.max_regions, ref.bases // planner.MIN_REGION_BASES))
    return lo, hi


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
    if isinstance(regions, bool) or not isinstance(regions, int) or not lo <= regions <= hi:
        raise ApiError(400, f"regions={regions!r}: out of range for reference {ref.name} ({ref.contigs} contigs, "
                            f"{ref.bases:,} non-N bases): give a whole number from {lo} to {hi}")
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
