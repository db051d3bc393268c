"""genefarm: the command line, over the master's REST API.

    genefarm serve [--host H] [--port P] [--no-poller]   the API (+ the poller, in its own process)
    genefarm poller                                      the poller alone
    genefarm reference add NAME FASTA | reference list
    genefarm submit NAME --reference REF R1 R2 [R1 R2 ...] [--regions K] [--output URI] [--chunk-pairs N] [--ranks R]
    genefarm submit --resubmit NAME
    genefarm plan --reference REF (--pairs N | R1 R2 ...) [--regions K]   the plan before anything runs
    genefarm status [RUN]        genefarm logs TASK [--attempt N]     genefarm cancel RUN
    genefarm explain TASK | --run RUN
    genefarm run R1 R2 [R1 R2 ...] --reference FASTA|NAME [--name S] [--regions K] ...   embedded master: start it,
                                 submit, follow with a progress bar, exit with the result
Every command takes --json (data on stdout; talk on stderr). Exit 0 ok, 1 failed, 2 bad input.
The API is found at --url / GENEFARM_API_URL (default http://127.0.0.1:8642), the token at
--token / GENEFARM_TOKEN / GENEFARM_HOME/token.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from master import settings as settings_mod
from master.client import Client, ClientError
from worker import contract

from bcc import cliplumbing
from bcc.cliplumbing import EXIT_BAD, EXIT_FAILED, EXIT_OK, talk


def out(args, data, text=None):
    cliplumbing.emit(args, data, text)


def _settings(args):
    return settings_mod.load(args.home)


def _client(args, s=None):
    s = s or _settings(args)
    token = args.token or os.environ.get("GENEFARM_TOKEN")
    if not token and os.path.exists(s.token_file):
        with open(s.token_file) as f:
            token = f.read().strip()
    return Client(args.url or s.url, token or "")


# ------------------------------------------------------------------ serve / poller
def start_poller(home, poll_seconds=None):
    env = dict(os.environ, GENEFARM_HOME=home)
    if poll_seconds and not os.environ.get("GENEFARM_POLL_SECONDS"):
        env["GENEFARM_POLL_SECONDS"] = str(poll_seconds)
    return subprocess.Popen([sys.executable, "-m", "master.poller"], env=env)


def cmd_serve(args):
    from werkzeug.serving import make_server

    from master.app import create_app
    from master.auth import ensure_token
    s = settings_mod.load(args.home, host=args.host, port=args.port)
    app = create_app(s)
    with app.config["SESSIONMAKER"]() as db:
        ensure_token(s, db)
    srv = make_server(s.host, s.port, app, threaded=True)
    poller = None if args.no_poller else start_poller(s.home)
    talk(f"genefarm: API on http://{s.host}:{srv.server_port}/api/v1/ (token in {s.token_file}), "
         f"backend {s.backend}, home {s.home}" + ("" if poller else ", no poller"))
    if args.json:      # one line, so a supervisor (or a test) can read it before the server blocks
        print(json.dumps({"url": f"http://{s.host}:{srv.server_port}", "pid": os.getpid(),
                          "poller_pid": poller.pid if poller else None}), flush=True)

    def stop(_sig, _frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever()
    finally:
        if poller and poller.poll() is None:
            poller.terminate()
            try:
                poller.wait(15)
            except subprocess.TimeoutExpired:
                poller.kill()
    return EXIT_OK


def cmd_poller(args):
    from master import poller
    return poller.main([], home=args.home)


# ------------------------------------------------------------------ data commands
def cmd_reference(args):
    c = _client(args)
    if args.action == "add":
        if not args.name or not args.uri:
            talk("genefarm reference add: give NAME and FASTA")
            return EXIT_BAD
        uri = args.uri if "://" in args.uri else os.path.abspath(args.uri)
        r = c.post("/references", {"name": args.name, "uri": uri})
        out(args, r, f"reference {r['name']}: {r['contigs']} contigs, {r['bases']:,} non-N bases ({r['uri']})")
    else:
        refs = c.get("/references")
        out(args, refs, "\n".join(f"{r['name']}\t{r['contigs']} contigs\t{r['uri']}" for r in refs) or "(none)")
    return EXIT_OK


def lane_ids(pairs):
    """Lane ids for FASTQ pairs: Illumina's _L00N_ from the file names when every pair has its own,
    else L1, L2, ..."""
    import re
    ids = []
    for r1, _ in pairs:
        m = re.search(r"_(L\d{3})(?:_|\.)", os.path.basename(r1))
        ids.append(m.group(1) if m else None)
    if None in ids or len(set(ids)) != len(ids):
        ids = [f"L{i}" for i in range(1, len(pairs) + 1)]
    return ids


def fastq_pairs(files):
    """R1 R2 [R1 R2 ...] -> [(r1, r2), ...] (ValueError on an odd count)."""
    if len(files) % 2:
        raise ValueError(f"{len(files)} FASTQ files given: give them in pairs, R1 R2 for each lane")
    return [(files[i], files[i + 1]) for i in range(0, len(files), 2)]


def _sample_body(args, name):
    params = {}
    if args.chunk_pairs:
        params["chunk_pairs"] = args.chunk_pairs
    if args.ranks:
        params["ranks"] = args.ranks
    pairs = fastq_pairs(args.fastq)
    if len(pairs) == 1:
        body = {"name": name, "reference": args.reference, "r1": _abs(pairs[0][0]), "r2": _abs(pairs[0][1]),
                "params": params}
    else:
        body = {"name": name, "reference": args.reference, "params": params,
                "lanes": [{"id": i, "r1": _abs(a), "r2": _abs(b)} for i, (a, b) in zip(lane_ids(pairs), pairs)]}
    if args.regions is not None:
        body["regions"] = args.regions
    if args.output:
        body["output"] = _abs(args.output)
    return body


def _abs(p):
    return p if not p or "://" in p else os.path.abspath(p)


def cmd_submit(args):
    c = _client(args)
    if args.resubmit:
        r = c.post(f"/samples/{args.resubmit}/runs")
        out(args, r, f"run {r['id']} of sample {args.resubmit} submitted")
        return EXIT_OK
    if not (args.name and args.reference and args.fastq):
        talk("genefarm submit: give NAME R1 R2 [R1 R2 ...] --reference REF (or --resubmit NAME)")
        return EXIT_BAD
    r = c.post("/samples", _sample_body(args, args.name))
    out(args, r, f"sample {r['sample']['name']}: run {r['run']['id']} submitted")
    talk(f"follow it with `genefarm status {r['run']['id']}`")
    return EXIT_OK


def cmd_plan(args):
    c = _client(args)
    if not args.reference:
        talk("genefarm plan: give --reference NAME and --pairs N or the FASTQ files (R1 R2 [R1 R2 ...])")
        return EXIT_BAD
    body = {"reference": args.reference}
    if args.regions is not None:
        body["regions"] = args.regions
    if args.pairs is not None:
        body["pairs"] = args.pairs
    elif args.fastq:
        pairs = fastq_pairs(args.fastq)
        body["lanes"] = [{"id": i, "r1": _abs(a), "r2": _abs(b)} for i, (a, b) in zip(lane_ids(pairs), pairs)]
    else:
        talk("genefarm plan: give --pairs N or the FASTQ files (R1 R2 [R1 R2 ...])")
        return EXIT_BAD
    p = c.post("/plan", body)
    called = [r for r in p["regions"] if r["calls"]]
    lines = [f"plan for {p['pairs']:,} read pairs on {p['reference']}: {p['tasks']['align']} align tasks of "
             f"{p['chunk_pairs']:,} pairs, {len(p['regions'])} call tasks ({len(called)} called, "
             f"{len(p['regions']) - len(called)} of ALT/decoy/HLA contigs sorted only)",
             "  stage    tasks  memory MB  cores"]
    for st in ("index", "split", "align", "call", "gather"):
        lines.append(f"  {st:<8}{p['tasks'][st]:>6}{p['memory_mb'][st]:>11,}{p['cores'][st]:>7}")
    for r in p["regions"][:args.show]:
        iv = r["intervals"]
        first = f"{iv[0][0]}:{iv[0][1] + 1:,}-{iv[0][2]:,}"
        lines.append(f"  {r['name']}  {first}" + (f" +{len(iv) - 1} more" if len(iv) > 1 else "")
                     + f"  ~{r['pairs']:,} pairs" + ("" if r["calls"] else "  (not called)"))
    if len(p["regions"]) > args.show:
        lines.append(f"  ... {len(p['regions']) - args.show} more (--json lists them all)")
    if p.get("fits"):
        lines.append(f"  does not fit: {p['fits']}")
    out(args, p, "\n".join(lines))
    return EXIT_BAD if p.get("fits") else EXIT_OK


def _fmt_counts(counts):
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


def cmd_status(args):
    c = _client(args)
    if args.run is None:
        runs = c.get("/runs")
        out(args, runs, "\n".join(f"run {r['id']}\t{r['sample']}\t{r['state']}\t{_fmt_counts(r['tasks'])}"
                                  for r in runs) or "(no runs)")
        return EXIT_OK
    r = c.get(f"/runs/{args.run}")
    tasks = c.get(f"/runs/{args.run}/tasks")
    r["task_list"] = tasks
    lines = [f"run {r['id']} of {r['sample']}: {r['state']} ({_fmt_counts(r['tasks'])}); "
             f"retries {r['retries']}, preemptions {r['preemptions']}"]
    if r.get("message") and r["state"] != "running":
        lines.append(f"  {r['message']}")
    for t in tasks:
        extra = " (cached)" if t["cached"] else ""
        if t["retries"] or t["preemptions"]:
            extra += f" retries {t['retries']}, preemptions {t['preemptions']}"
        lines.append(f"  task {t['id']:>5} {t['key']:<16} {t['state']:<9}{extra}")
    out(args, r, "\n".join(lines))
    return EXIT_FAILED if r["state"] in ("failed", "cancelled") and args.exit_status else EXIT_OK


def cmd_logs(args):
    c = _client(args)
    atts = c.get(f"/tasks/{args.task}/attempts")
    if not atts:
        talk(f"task {args.task} has not been submitted yet")
        return EXIT_FAILED
    a = next((x for x in atts if x["number"] == args.attempt), None) if args.attempt else atts[-1]
    if a is None:
        talk(f"task {args.task} has no attempt {args.attempt}")
        return EXIT_BAD
    text = c.get(f"/attempts/{a['id']}/log" + (f"?tail={args.tail}" if args.tail else ""), raw=True)
    out(args, {"attempt": a, "log": text}, text.rstrip("\n"))
    return EXIT_OK


def cmd_cancel(args):
    r = _client(args).post(f"/runs/{args.run}/cancel")
    out(args, r, f"run {r['id']}: cancel requested")
    return EXIT_OK


def cmd_explain(args):
    c = _client(args)
    if args.run is not None:
        tasks = c.get(f"/runs/{args.run}/tasks")
        pick = [t for t in tasks if t["state"] == "failed" or t["retries"] or t["preemptions"]] or tasks
        res = [c.get(f"/tasks/{t['id']}/explain") for t in pick]
        out(args, res, "\n".join(x["text"] for x in res))
        return EXIT_OK
    if args.task is None:
        talk("genefarm explain: give TASK or --run RUN")
        return EXIT_BAD
    r = c.get(f"/tasks/{args.task}/explain")
    out(args, r, r["text"])
    return EXIT_OK


# ------------------------------------------------------------------ run (embedded master)
def _free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def follow(c, run_id, json_mode, interval=1.0):
    """Follow a run until it ends, with a progress bar on stderr; returns the run."""
    from tqdm import tqdm
    tty = sys.stderr.isatty()
    bar = None if json_mode or not tty else tqdm(total=1, unit="task", file=sys.stderr, dynamic_ncols=True,
                                                 bar_format="{desc} {bar} {n_fmt}/{total_fmt} tasks [{elapsed}]")
    last = None
    t0 = time.time()
    try:
        while True:
            r = c.get(f"/runs/{run_id}")
            counts = r["tasks"]
            total = sum(counts.values())
            done = counts.get("done", 0) + counts.get("failed", 0) + counts.get("cancelled", 0)
            if bar is not None:
                bar.total = max(total, 1)
                bar.n = done
                active = counts.get("running", 0) + counts.get("queued", 0)
                bar.set_description_str(f"run {run_id}: {active} active")
                bar.refresh()
            elif not json_mode:             # not a terminal (a log, CI): one line when something changed
                line = f"run {run_id}: {done}/{total} tasks finished, " + _fmt_counts(counts)
                if line != last:
                    talk(f"[{time.time() - t0:6.1f} s] {line}")
                    last = line
            if r["state"] != "running":
                return r
            time.sleep(interval)
    finally:
        if bar is not None:
            bar.close()


def summary_text(r):
    sm = r.get("summary") or {}
    qc = sm.get("qc") or {}
    lines = [f"run {r['id']} of {r['sample']}: {r['state']}"]
    if qc:
        n = max(qc.get("reads", 0), 1)
        lines += [f"  reads        {qc.get('reads', 0):,}",
                  f"  mapped       {qc.get('mapped', 0):,} ({100 * qc.get('mapped', 0) / n:.2f}%)",
                  f"  duplicates   {qc.get('duplicates', 0):,} ({100 * qc.get('duplicates', 0) / n:.2f}%)",
                  f"  variants     {qc.get('variants', 0):,} ({qc.get('snps', 0):,} SNPs, {qc.get('indels', 0):,} indels)",
                  f"  BAM          {qc.get('bam', '')} (+ .bai)",
                  f"  VCF          {qc.get('vcf', '')} (+ .tbi)"]
    if sm.get("stages"):
        lines.append(f"  {'stage':<8} {'tasks':>5} {'cached':>6} {'wall s':>8} {'core s':>9} {'retries':>7} "
                     f"{'preempt':>7}")
        for name in ("index", "split", "align", "call", "gather"):
            s = sm["stages"].get(name)
            if s:
                lines.append(f"  {name:<8} {s['tasks']:>5} {s['cached']:>6} {s['wall_seconds']:>8.1f} "
                             f"{s['core_seconds']:>9.1f} {s['retries']:>7} {s['preemptions']:>7}")
        lines.append(f"  total wall {sm.get('wall_seconds', 0):.1f} s")
    if r["state"] != "done" and r.get("message"):
        lines.append(f"  {r['message']}")
    return "\n".join(lines)


def cmd_run(args):
    from werkzeug.serving import make_server

    from master.app import create_app
    from master.auth import ensure_token
    s = settings_mod.load(args.home, backend=args.backend)
    app = create_app(s)
    with app.config["SESSIONMAKER"]() as db:
        token = ensure_token(s, db)
    srv = make_server("127.0.0.1", _free_port(), app, threaded=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    # the embedded master on this machine polls often (cheap: local files), unless told otherwise
    poller = start_poller(s.home, 0.5 if s.backend == "local" else None)
    c = Client(f"http://127.0.0.1:{srv.server_port}", token)
    try:
        ref = args.reference
        if os.path.exists(ref):
            refs = c.get("/references")
            path = os.path.abspath(ref)
            hit = next((x for x in refs if x["uri"] == path), None)
            if hit is None:
                base = os.path.basename(path).split(".")[0] or "ref"
                name = base
                taken = {x["name"] for x in refs}
                i = 2
                while name in taken:
                    name, i = f"{base}-{i}", i + 1
                talk(f"genefarm run: registering reference {name} ({path})")
                hit = c.post("/references", {"name": name, "uri": path})
            ref = hit["name"]
        args.reference = ref
        name = args.name or os.path.basename(args.fastq[0]).split("_R1")[0].split(".")[0]
        samples = {x["name"] for x in c.get("/samples")}
        if name in samples and args.resubmit:
            run = c.post(f"/samples/{name}/runs")
        else:
            run = c.post("/samples", _sample_body(args, name))["run"]
        talk(f"genefarm run: sample {name}, run {run['id']} on the {s.backend} backend")
        r = follow(c, run["id"], args.json)
        r["task_list"] = c.get(f"/runs/{run['id']}/tasks")
        out(args, r, summary_text(r))
        if r["state"] != "done":
            failed = [t for t in r["task_list"] if t["state"] == "failed"]
            bad = False
            for t in failed[:3]:
                ex = c.get(f"/tasks/{t['id']}/explain")
                talk(ex["text"])
                last = (ex.get("attempts") or [{}])[-1]
                bad = bad or contract.outcome_of_exit(last.get("exit_code")) == contract.Outcome.BAD_INPUT
            return EXIT_BAD if bad else EXIT_FAILED
        return EXIT_OK
    finally:
        poller.terminate()
        try:
            poller.wait(15)
        except subprocess.TimeoutExpired:
            poller.kill()
        srv.shutdown()


# ------------------------------------------------------------------ main
def parser():
    # options accepted before and after the command (SUPPRESS: a subcommand does not reset them)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="data as JSON on stdout")
    common.add_argument("--home", default=argparse.SUPPRESS, help="GENEFARM_HOME (default ~/.genefarm)")
    common.add_argument("--url", default=argparse.SUPPRESS, help="the master's API (default http://127.0.0.1:8642)")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="API token (default: GENEFARM_TOKEN or GENEFARM_HOME/token)")
    ap = argparse.ArgumentParser(prog="genefarm", parents=[common],
                                 description="genefarm: a genomics batch farm (master CLI over the REST API)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", parents=[common], help="serve the REST API (and start the poller)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-poller", action="store_true", help="do not start a poller beside the API")
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("poller", parents=[common], help="run the poller (follows tasks, submits work)")
    p.set_defaults(fn=cmd_poller)
    p = sub.add_parser("reference", parents=[common], help="register or list references")
    p.add_argument("action", choices=["add", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("uri", nargs="?")
    p.set_defaults(fn=cmd_reference)

    def sample_opts(p):
        p.add_argument("--reference", help="reference name (run: or a FASTA path)")
        p.add_argument("--regions", type=int, help="regions to call separately")
        p.add_argument("--output", help="where the BAM/VCF go (directory, s3://, oss://)")
        p.add_argument("--chunk-pairs", type=int, help="read pairs per alignment chunk")
        p.add_argument("--ranks", type=int, help="MPI ranks per alignment task")
    p = sub.add_parser("submit", parents=[common], help="submit a sample (FASTQ pairs, one per lane, + reference)")
    p.add_argument("name", nargs="?")
    p.add_argument("fastq", nargs="*", metavar="R1 R2", help="a FASTQ pair per lane (R1 R2 [R1 R2 ...])")
    p.add_argument("--resubmit", metavar="NAME", help="run a sample again (done work comes from the cache)")
    sample_opts(p)
    p.set_defaults(fn=cmd_submit)
    p = sub.add_parser("plan", parents=[common], help="the plan a sample would get: regions, tasks, memory, cores")
    p.add_argument("fastq", nargs="*", metavar="R1 R2", help="the sample's FASTQ pairs (or --pairs N)")
    p.add_argument("--reference", help="reference name")
    p.add_argument("--pairs", type=int, help="the sample's read pairs (instead of its files)")
    p.add_argument("--regions", type=int, help="about this many call shards (default: sized by the reads)")
    p.add_argument("--show", type=int, default=10, help="regions listed in the text output (default 10)")
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("status", parents=[common], help="runs, or one run's tasks")
    p.add_argument("run", nargs="?", type=int)
    p.add_argument("--exit-status", action="store_true", help="exit 1 when the run failed or was cancelled")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("logs", parents=[common], help="a task's log (its last attempt by default)")
    p.add_argument("task", type=int)
    p.add_argument("--attempt", type=int)
    p.add_argument("--tail", type=int, help="only the last BYTES")
    p.set_defaults(fn=cmd_logs)
    p = sub.add_parser("cancel", parents=[common], help="cancel a run")
    p.add_argument("run", type=int)
    p.set_defaults(fn=cmd_cancel)
    p = sub.add_parser("explain", parents=[common], help="why a task failed, re-ran, or came from the cache")
    p.add_argument("task", nargs="?", type=int)
    p.add_argument("--run", type=int, help="explain the failed or retried tasks of a run")
    p.set_defaults(fn=cmd_explain)
    p = sub.add_parser("run", parents=[common], help="embedded master: submit a sample and follow it to the end")
    p.add_argument("fastq", nargs="+", metavar="R1 R2", help="a FASTQ pair per lane (R1 R2 [R1 R2 ...]); each lane "
                                                             "gets its own read group")
    p.add_argument("--name", help="sample name (default: from R1's file name)")
    p.add_argument("--backend", help="local (default), drmaa, sge or slurm")
    p.add_argument("--resubmit", action="store_true", help="when the sample exists, run it again")
    sample_opts(p)
    p.set_defaults(fn=cmd_run)
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    for k, v in (("json", False), ("home", None), ("url", None), ("token", None)):
        if not hasattr(args, k):
            setattr(args, k, v)
    try:
        return cliplumbing.run(args.fn, args, "genefarm", bad=(ValueError,), error="error: ")
    except ClientError as e:
        talk(f"genefarm: error: {e.message}")
        if e.status == 0:
            return EXIT_FAILED
        return EXIT_BAD if 400 <= e.status < 500 else EXIT_FAILED


def entry():
    sys.exit(main())


if __name__ == "__main__":
    entry()
