"""The sample pipeline: which tasks a run has, and when the next ones can be made.

    index   reference -> index directory (one per reference content: its cache key has only
            the reference's content hash, so every sample of that reference shares it)
    split   per lane: R1 + R2 -> chunk files (the kernel checks the pair: counts and names); a
            lane that makes one chunk is not split: its align task reads the lane's files
    (plan)  index + the pairs the splits found -> regions.bed + plan.json: the planner
            (planner.make_plan), run by the master itself, cached by key
    align   per chunk: index + chunk + regions.bed -> one part file (kernels.partfile: the records
            grouped by region) and the chunk's base-quality counts
    call    per shard (a run of the plan's pieces): every chunk's part file (of which the kernel reads only the region's groups
            and its neighbours' edges), the index (its bases near the region), and every chunk's
            quality counts (so a region is called as the whole sample would be) -> region VCF + BAM
    gather  region VCFs + region BAMs + the part files' pairs with no position -> sample VCF.gz +
            TBI, BAM + BAI, QC summary

`start(db, settings, run)` makes the first tasks; `advance(db, eng, run)` is called on every poll and
makes the next stage's tasks once the tasks they need are done (their count depends on the
outputs before them: chunks from split, regions from the plan). Tasks name their inputs by
location (`inputs`) and by identity (`basis.inputs`, see cachekey.py).
"""
import glob
import hashlib
import os
import re

from sqlalchemy import func, select

from master import planner
from master.resources import for_task as task_resources
from worker import contract
from worker.contract import CHUNK_GLOB, DONE_MARKER, REGION_BAM, REGION_VCF
from master.states import TaskState
from master.store import Task, add_event

STAGES = contract.STAGES


def work_dir(settings, stage, key):
    return os.path.join(settings.dir("work"), stage, key[:2], key)


def _task(db, run, stage, key, deps, inputs, basis_inputs, params=None, region="", resources=None):
    t = Task(run_id=run.id, stage=stage, key=key, deps=deps, inputs=inputs, region=region,
             params=params or {}, resources=resources or {"cpus": 1, "ranks": 1},
             basis={"inputs": basis_inputs}, state=TaskState.PENDING.value)
    db.add(t)
    db.flush()
    add_event(db, run.id, t.id, "created", f"task {key} created (stage {stage})")
    return t


def split_key(sample, lane):
    """One lane: "split"; several: "split/<lane id>"."""
    return "split" if len(sample.lane_list) == 1 else f"split/{lane['id']}"


def read_group(sample, lane):
    """The lane's @RG line: its own ID (and platform unit), the sample's SM and library, so that a
    pair sequenced in two lanes is a duplicate across them."""
    one = len(sample.lane_list) == 1
    rid = sample.name if one else f"{sample.name}.{lane['id']}"
    pu = "" if one else f"\\tPU:{lane['id']}"
    return f"@RG\\tID:{rid}\\tSM:{sample.name}\\tLB:{sample.name}\\tPL:ILLUMINA{pu}"


def _mapped_mb(index_out, names=None):
    """MB of the index's files a task maps (the page cache holds them, shared; address space
    limits must leave room for them): all of them, or those named."""
    try:
        fs = [f for f in os.listdir(index_out) if f.startswith("ref.gfi.") and (names is None or f in names)]
        return int(sum(os.path.getsize(os.path.join(index_out, f)) for f in fs) / 1e6) + 1
    except OSError:
        return 0


def start(db, settings, run):
    s = run.sample
    ref = s.reference
    _task(db, run, "index", "index", [], {"reference": ref.uri}, {"reference": f"sha256:{ref.sha256}"},
          resources=task_resources("index", 1, genome_bases=ref.bases))
    per_lane = lane_pairs(s)
    chunk = s.params.get("chunk_pairs") or settings.chunk_pairs or \
        planner.chunk_size(sum(per_lane.values()), parallel=planner.parallel_of(settings))
    direct = {}
    for lane in s.lane_list:
        if per_lane[lane["id"]] <= DIRECT_SLACK * chunk:
            direct[lane["id"]] = per_lane[lane["id"]]   # one chunk: its align task reads the lane's files
            continue
        _task(db, run, "split", split_key(s, lane), [], {"r1": lane["r1"], "r2": lane["r2"]},
              {"r1": f"file:{lane['r1']}", "r2": f"file:{lane['r2']}"}, params={"pairs": int(chunk)},
              resources=task_resources("split", 1))
    if direct:
        run.summary = dict(run.summary or {}, direct=direct)
        add_event(db, run.id, None, "plan", f"{len(direct)} of {len(s.lane_list)} lanes fit one align chunk "
                                            f"({int(chunk):,} pairs): aligned from their files, not split")


DIRECT_SLACK = 1.25     # a lane estimated at up to this many chunks is aligned whole (estimates err)


def lane_pairs(sample):
    """{lane id: read pairs}, estimated from the lanes' R1 files before anything reads them (the
    chunk size follows from it; the plan then uses the pairs the splits count)."""
    from worker import storage
    n = {}
    for lane in sample.lane_list:
        if storage.is_remote(lane["r1"]):
            n[lane["id"]] = planner.estimate_pairs(None, storage.stat(lane["r1"])["size"])
        else:
            n[lane["id"]] = planner.estimate_pairs(storage.local_path(lane["r1"]))
    return n


def estimated_pairs(sample):
    """The sample's read pairs, estimated from its R1 files."""
    return sum(lane_pairs(sample).values())


def _out(t):
    return t.outputs.get("out", "")


def pairs_of(splits, direct=None):
    """Read pairs the split tasks found (their kernels' summaries; else their chunks x pairs asked),
    and those estimated for the lanes aligned from their files (direct: {lane id: pairs})."""
    from kernels.split import SplitSummary
    n = sum(int(x) for x in (direct or {}).values())
    for t in splits:
        got = SplitSummary.from_dict(t.result or {}).pairs
        n += got or len(chunks_of(_out(t))) * int(t.params.get("pairs", 0))
    return max(n, 1)


def _plan(db, eng, run, index_task, splits, direct=None):
    """The sample's plan (planner.make_plan) from the index's contigs and the pairs the splits
    found: regions.bed (the pieces the aligner groups by) and plan.json (the call shards) under the
    work directory, keyed by the index, the pairs, the region count asked (0: sized by the pairs)
    and the tasks the backend runs at once."""
    import json
    k = int(run.sample.regions or 0)
    pairs = pairs_of(splits, direct)
    par = planner.parallel_of(eng.settings)
    key = hashlib.sha256(f"plan3\0{index_task.cache_key}\0{k}\0{pairs}\0{planner.PAIRS_PER_CALL}\0{par}"
                         .encode()).hexdigest()
    d = work_dir(eng.settings, "plan", key)
    bed, pj = os.path.join(d, "regions.bed"), os.path.join(d, "plan.json")
    if not os.path.exists(pj):
        contigs = planner.contigs_of_index(os.path.join(_out(index_task), "ref"))
        p = planner.make_plan(contigs, pairs, regions=k or None, lanes=len(splits) + len(direct or {}), parallel=par)
        os.makedirs(d, exist_ok=True)
        planner.write_plan_bed(p, bed)
        shards = [[s.first, s.last, s.calls, s.spec(p.pieces), round(s.pairs)] for s in p.shards]
        tmp = f"{pj}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"pairs": pairs, "pieces": len(p.pieces), "shards": shards}, f)
        os.replace(tmp, pj)
        add_event(db, run.id, None, "plan", f"planned {len(p.shards)} call shards ({sum(s.calls for s in p.shards)} "
                                            f"called) over {len(p.pieces)} pieces for {pairs:,} pairs"
                                            + (f" ({k} regions asked)" if k else "") + f" -> {bed}")
    with open(pj) as f:
        got = json.load(f)
    summary = dict(run.summary or {})
    summary["plan"] = {"bed": bed, "key": key, "pairs": got["pairs"], "pieces": got["pieces"],
                       "shards": [x[:3] + x[4:5] for x in got["shards"]], "regions": [x[3] for x in got["shards"]]}
    run.summary = summary
    return summary["plan"]


def stage_manifest(settings, tasks):
    """A JSON file naming the tasks' output directories, under the work directory by the digest of
    their cache keys (written once; the same tasks give the same file): (path, digest)."""
    import json
    keys = sorted((t.key, t.cache_key) for t in tasks)
    digest = hashlib.sha256("".join(f"{k}\0{c}\n" for k, c in keys).encode()).hexdigest()
    d = work_dir(settings, "manifest", digest)
    path = os.path.join(d, "outputs.json")
    if not os.path.exists(path):
        os.makedirs(d, exist_ok=True)
        by_key = {t.key: t for t in tasks}
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"uris": [_out(by_key[k]) for k, _ in keys], "keys": [k for k, _ in keys]}, f)
        os.replace(tmp, path)
    return path, digest


def chunks_of(split_out):
    """[(name, r1, r2)] of the chunk files kernels.split wrote (PREFIX.cNNNN_R1/_R2.fastq.gz)."""
    out = []
    for r1 in sorted(glob.glob(os.path.join(split_out, CHUNK_GLOB))):
        m = re.search(r"\.(c\d+)_R1\.fastq\.gz$", r1)
        r2 = r1[:-len("_R1.fastq.gz")] + "_R2.fastq.gz"
        if m and os.path.exists(r2):
            out.append((m.group(1), r1, r2))
    return out


def _stage_counts(db, run):
    """{stage: (tasks, done)} of a run, in one query."""
    out = {}
    for stage, state, n in db.execute(select(Task.stage, Task.state, func.count()).where(Task.run_id == run.id)
                                      .group_by(Task.stage, Task.state)).all():
        a, b = out.get(stage, (0, 0))
        out[stage] = (a + n, b + (n if state == TaskState.DONE.value else 0))
    return out


def _stage_tasks(db, run, stage):
    return sorted(db.scalars(select(Task).where(Task.run_id == run.id, Task.stage == stage)).all(),
                  key=lambda t: t.key)


def advance(db, eng, run):
    """Make the tasks whose inputs are now known. Returns the number made. Reads the run's counts per
    stage, and a stage's tasks only when the next stage is made from them (once per run)."""
    counts = _stage_counts(db, run)
    if any(n for stage, (n, _) in counts.items() if stage not in ("index", "split")) and \
            not any(n and n == d for stage, (n, d) in counts.items() if stage in ("align", "call")):
        return 0                               # a stage runs: nothing to make until it is done
    made = 0
    st = eng.settings
    s = run.sample
    tasks = {t.key: t for t in db.scalars(select(Task).where(Task.run_id == run.id,
                                                             Task.stage.in_(("index", "split"))))}
    idx = tasks.get("index")
    direct = (run.summary or {}).get("direct") or {}
    lanes = [(lane, tasks.get(split_key(s, lane))) for lane in s.lane_list]
    if idx is None or any(t is None and lane["id"] not in direct for lane, t in lanes):
        return 0
    done = TaskState.DONE.value
    splits = [t for _, t in lanes if t is not None]
    if idx.state == done and all(t.state == done for t in splits) and "plan" not in (run.summary or {}):
        _plan(db, eng, run, idx, splits, direct)
    plan = (run.summary or {}).get("plan")
    n_align, done_align = counts.get("align", (0, 0))
    n_call, done_call = counts.get("call", (0, 0))
    if plan and all(t.state == done for t in splits) and not n_align:
        for lane, spl in lanes:
            prefix = "align/" if len(lanes) == 1 else f"align/{lane['id']}."
            if spl is None:                    # the lane is one chunk: aligned from its own files
                _task(db, run, "align", prefix + "c0000", ["index"],
                      {"index": _out(idx), "r1": lane["r1"], "r2": lane["r2"], "regions": plan["bed"]},
                      {"index": f"task:{idx.cache_key}", "r1": f"file:{lane['r1']}", "r2": f"file:{lane['r2']}",
                       "regions": f"plan:{plan['key']}"},
                      params={"read_group": read_group(s, lane)},
                      resources=dict(task_resources("align", st.threads, ranks=int(s.params.get("ranks", 1))),
                                     mapped_mb=_mapped_mb(_out(idx))))
                made += 1
                continue
            chunks = chunks_of(_out(spl))
            if not chunks:
                run.message = f"split produced no chunks in {_out(spl)}"
                add_event(db, run.id, spl.id, "error", run.message)
                return 0
            for name, r1, r2 in chunks:
                rel1, rel2 = os.path.basename(r1), os.path.basename(r2)
                _task(db, run, "align", prefix + name, ["index", spl.key],
                      {"index": _out(idx), "r1": r1, "r2": r2, "regions": plan["bed"]},
                      {"index": f"task:{idx.cache_key}", "r1": f"task:{spl.cache_key}/{rel1}",
                       "r2": f"task:{spl.cache_key}/{rel2}", "regions": f"plan:{plan['key']}"},
                      params={"read_group": read_group(s, lane)},
                      resources=dict(task_resources("align", st.threads, ranks=int(s.params.get("ranks", 1))),
                                     mapped_mb=_mapped_mb(_out(idx))))
                made += 1
            add_event(db, run.id, spl.id, "expand", f"{len(chunks)} chunks of lane {lane['id']} -> "
                                                    f"{len(chunks)} align tasks")
        return made
    if n_align and not n_call and done_align == n_align:
        aligns = _stage_tasks(db, run, "align")
        specs = plan["regions"]
        shards = plan["shards"]
        # the call tasks name their inputs once: a manifest of the align tasks' output directories
        # (each holds part.bam and qual-counts.json; the kernel reads only its shard's groups of
        # every part file), identified by the align tasks' cache keys; they wait for the whole stage
        manifest, digest = stage_manifest(eng.settings, aligns)
        refs = {"reference": _out(idx), "parts": {"manifest": manifest}, "regions": plan["bed"]}
        basis = {"reference": f"task:{idx.cache_key}", "parts": f"stage:align:{digest}",
                 "regions": f"plan:{plan['key']}"}
        mapped = _mapped_mb(_out(idx), {"ref.gfi.seq.npy", "ref.gfi.json"})
        for r, (spec, (first, last, _, pairs)) in enumerate(zip(specs, shards)):
            _task(db, run, "call", f"call/r{r:04d}", ["align/*"], refs, basis, region=spec[:200],
                  params={"rows": [first, last]},
                  resources=dict(task_resources("call", st.threads, pairs=pairs), mapped_mb=mapped))
            made += 1
        add_event(db, run.id, None, "expand", f"{len(specs)} call shards -> {len(specs)} call tasks")
        return made
    if n_call and not counts.get("gather") and done_call == n_call:
        calls = _stage_tasks(db, run, "call")
        aligns = _stage_tasks(db, run, "align")
        vcfs = [os.path.join(_out(t), REGION_VCF) for t in calls]
        bams = [os.path.join(_out(t), REGION_BAM) for t in calls]
        _task(db, run, "gather", "gather", ["call/*"],
              {"vcfs": vcfs, "bams": bams, "parts": [_out(t) for t in aligns]},
              {"vcfs": [f"task:{t.cache_key}/{REGION_VCF}" for t in calls],
               "bams": [f"task:{t.cache_key}/{REGION_BAM}" for t in calls],
               "parts": [f"task:{t.cache_key}" for t in aligns]},
              params={"sample": s.name}, resources=task_resources("gather", st.threads))
        made += 1
    return made


def output_uri(settings, task, run):
    """Where a task's outputs go: the sample's output URI for gather when one was given, else the
    work directory of its cache key (found again by later runs)."""
    if task.stage == "gather" and run.sample.output:
        return run.sample.output.rstrip("/") + f"/run{run.id}"
    return work_dir(settings, task.stage, task.cache_key)


def is_complete(task_or_outputs):
    """True when a task's output directory was delivered whole (it holds the worker's marker)."""
    from worker import storage
    out = task_or_outputs.get("out", "") if isinstance(task_or_outputs, dict) else _out(task_or_outputs)
    if not out:
        return False
    if storage.is_remote(out):
        try:
            storage.stat(storage.join(out, DONE_MARKER))
            return True
        except storage.StorageError:
            return False
    return os.path.exists(os.path.join(storage.local_path(out), DONE_MARKER))
