"""bcc: make and run an SGE or Slurm cluster of worker groups (the cluster tool of genefarm).

    bcc login [PROVIDER/REGION] [KEY_ID]        credentials (the secret from a prompt or $BCC_SECRET)
    bcc start -n N -t TYPE -i IMAGE [--vpc_cidr_block CIDR] [-m SRC:DST,...] [-d DISKS] [--group_num G]
              [--scheduler sge|slurm] [--provider ssh|aws|aliyun] [provider options]
    bcc status [CLUSTER] [--all] [--wait]       groups, nodes, steps, and the scheduler's own view
    bcc resize GROUP N                          grow, or drain and shrink, a group
    bcc update [GROUP] -t TYPE | -i IMAGE       roll a group: new nodes join first, old ones drain, then go
    bcc stop [--force]                          drain and release every worker, stop the master's daemons
    bcc attach CLUSTER_ID                       make CLUSTER_ID the cluster later commands act on
    bcc reconcile [--every SECONDS]             keep the scheduler in step with the provider
    bcc type | t    bcc disk | d                instance types / disk types of a provider
Every command takes --json (data on stdout; talk on stderr). Exit 0 ok, 1 failed, 2 bad input.
State: GENEFARM_HOME/bcc (default ~/.genefarm/bcc).
"""
import argparse
import getpass
import os
import sys
import time

from bcc import cliplumbing, creds, state
from bcc.cliplumbing import EXIT_BAD, EXIT_FAILED, EXIT_OK, talk  # noqa: F401  (EXIT_OK: the commands')
from bcc.errors import BadInput, BccError


def emit(args, data, text):
    cliplumbing.emit(args, data, text or None, dumps=state.dumps)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        talk(f"bcc: {message} (see `bcc {self.prog.split()[-1] if ' ' in self.prog else ''} --help`)")
        sys.exit(EXIT_BAD)


def _cluster_id(args):
    cid = getattr(args, "cluster", None) or state.get_current()
    if not cid:
        raise BadInput("no cluster given and none attached: `bcc start ...` makes one, `bcc attach CLUSTER_ID` "
                       "picks one (`bcc status --all` lists them)")
    return cid


def _ops(args, lock=True):
    from bcc.cluster import Ops
    return Ops(_cluster_id(args), talk, progress=not args.json, lock=lock)


# ------------------------------------------------------------------ text views
def render_summary(s):
    c = s["cluster"]
    lines = [f"cluster {c['id']}  {c['state']}  {c['scheduler']} on {c['provider']}  master "
             f"{c['master'].get('name', '')} ({c['master'].get('address', '')})"]
    if s.get("mounts"):
        lines.append("mounts  " + "  ".join(s["mounts"]))
    for g in s["groups"]:
        lines.append(f"group {g['name']}: {len(g['nodes'])} of {g['size']} wanted, {g['instance_type']}, {g['image']}")
        for n in g["nodes"]:
            lines.append(f"  {n['name']:<16} {n['address']:<15} {n['state']:<13} {n['slots']} slot(s)"
                         + (f"  {n['detail'][:80]}" if n.get("detail") else ""))
    if s.get("scheduler_view"):
        lines.append(f"{c['scheduler']} says:")
        lines += ["  " + ln for ln in s["scheduler_view"].rstrip().splitlines()]
    if s.get("events"):
        lines.append("recent steps:")
        for e in s["events"]:
            lines.append(f"  {e['at']}  {e['step']:<9} {(e['node'] + ': ') if e['node'] else ''}{e['message']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ commands
def cmd_login(args):
    target = args.target or "aws/" + (os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    provider, _, region = target.partition("/")
    if provider not in ("aws", "aliyun", "ssh"):
        raise BadInput(f"unknown provider '{provider}' in '{target}': use aws/REGION, aliyun/REGION or ssh/USER")
    if provider != "ssh" and not region:
        raise BadInput(f"give the region: bcc login {provider}/REGION KEY_ID (e.g. {provider}/us-east-1)")
    key_id = args.key_id
    if not key_id and sys.stdin.isatty():
        key_id = input("key id: " if provider != "ssh" else "private key file: ").strip()
    if not key_id:
        raise BadInput(f"give the key id: bcc login {target} KEY_ID")
    secret = creds.secret_from_env(provider)
    if secret is None:
        if not sys.stdin.isatty():
            raise BadInput(f"no secret: set {creds.SECRET_ENVS[provider][0]} in the environment, or run bcc login in a "
                           "terminal to be asked for it (never on the command line)")
        secret = getpass.getpass(f"secret for {key_id} ({target}): " if provider != "ssh" else
                                 f"passphrase of {key_id} (empty: none): ")
    extra = {}
    if provider == "aws":
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
        endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        try:
            ident = boto3.client("sts", region_name=region, endpoint_url=endpoint, aws_access_key_id=key_id,
                                 aws_secret_access_key=secret).get_caller_identity()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            raise BccError(f"AWS refused key {key_id} ({code}): check the key id and its secret, then run "
                           f"`bcc login {target} KEY_ID` again; nothing was saved") from None
        except BotoCoreError as e:
            raise BccError(f"cannot reach AWS to check the key ({e}); nothing was saved") from None
        extra = {"account": ident.get("Account", ""), "arn": ident.get("Arn", "")}
        if endpoint:
            extra["endpoint_url"] = endpoint
    elif provider == "ssh":
        import paramiko
        if not os.path.exists(key_id):
            raise BadInput(f"SSH key file {key_id} not found")
        try:
            paramiko.PKey.from_path(key_id, password=secret.encode() if secret else None)
        except (paramiko.SSHException, ValueError) as e:
            raise BccError(f"cannot open SSH key {key_id} ({e}): wrong passphrase? nothing was saved") from None
        key_id = os.path.abspath(key_id)
    else:
        talk("bcc: note: the aliyun provider is not available in this version; the credentials are kept for later")
    path = creds.save(target, key_id, secret, extra)
    emit(args, {"target": target, "key_id": key_id, "file": path, **extra},
         f"credentials for {target} (key {key_id}) saved in {path} (mode 0600)")
    return EXIT_OK


def _provider_config(args):
    from bcc.specs import parse_host, parse_hosts
    hk = {}
    for item in args.host_key or []:
        name, sep, fp = item.partition("=")
        if not sep or not fp.startswith("SHA256:"):
            raise BadInput(f"--host-key '{item}': expected NAME=SHA256:FINGERPRINT (as `ssh-keygen -lf` prints)")
        hk[name] = fp
    identity = args.identity
    if not identity:
        try:
            identity = creds.get("ssh")["key_id"]
        except BadInput:
            identity = None
    ssh = {"host_keys": hk, "trust_new": args.trust_new_host_keys, "identity": identity,
           "master": args.master or "local", "master_address": args.master_address or ""}
    if args.master and args.master != "local":
        parse_host(args.master)
    if args.provider == "ssh":
        ssh["hosts"] = [str(h) for h in parse_hosts(args.hosts)]
        if not identity:
            raise BadInput("the ssh provider needs a key: --identity KEYFILE or `bcc login ssh/USER KEYFILE`")
        return {"ssh": ssh}
    if args.provider == "aws":
        region = args.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        endpoint = args.endpoint_url
        if not endpoint:
            try:
                endpoint = creds.get(f"aws/{region}").get("endpoint_url")
            except BadInput:
                endpoint = None
        return {"ssh": ssh, "aws": {"region": region, "vpc_id": args.vpc_id, "endpoint_url": endpoint,
                                    "key_name": args.key_name, "ssh_user": args.ssh_user}}
    return {"ssh": ssh}


def cmd_start(args):
    from bcc import cluster, providers
    from bcc.specs import parse_disks, parse_mounts
    mounts = parse_mounts(args.mounts)
    if args.provider not in providers.NAMES:
        raise BadInput(f"unknown provider '{args.provider}': use one of {', '.join(providers.NAMES)}")
    pc = _provider_config(args)
    prov = providers.get(args.provider, dict(pc), talk)
    kinds = [d["name"] for d in prov.disk_types()]
    disks = parse_disks(args.disks, kinds, prov.default_disk)
    default_ports = {"sge": (16444, 16445), "slurm": (16817, 16818)}.get(args.scheduler, (0, 0))
    ports = default_ports
    if args.ports:
        try:
            ports = tuple(int(p) for p in args.ports.split(","))
            assert len(ports) == 2 and all(1024 < p < 65536 for p in ports)
        except (ValueError, AssertionError):
            raise BadInput(f"--ports '{args.ports}': expected two ports above 1024, e.g. 16444,16445") from None
    opts = {"provider": args.provider, "scheduler": args.scheduler, "n": args.n, "instance_type": args.type,
            "image": args.image, "cidr": args.vpc_cidr_block, "mounts": mounts, "disks": disks,
            "group_num": args.group_num, "provider_config": pc, "ports": list(ports), "mount_mode": args.mount_mode,
            "drain_timeout": args.drain_timeout, "watchdog_seconds": args.watchdog, "requeue_delay": args.requeue_delay,
            "object_endpoint": args.object_endpoint or "", "master_address": args.master_address or ""}
    s = cluster.start(opts, talk, progress=not args.json)
    emit(args, s, render_summary(s))
    return EXIT_OK


def cmd_status(args):
    if args.all:
        with state.sessions()() as db:
            from sqlalchemy import select
            rows = [state.as_dict(c) for c in db.scalars(select(state.Cluster).order_by(state.Cluster.created_at))]
        for r in rows:
            r.pop("config", None)
        cur = state.get_current()
        emit(args, {"current": cur, "clusters": rows},
             "\n".join(f"{'*' if r['id'] == cur else ' '} {r['id']}  {r['state']:<9} {r['scheduler']:<6} {r['provider']:<6} "
                       f"master {r['master'].get('name', '')}  since {r['created_at']}" for r in rows) or "(no clusters)")
        return EXIT_OK
    def show(ops):
        if args.wait:
            from tqdm import tqdm
            t0 = time.time()
            bar = tqdm(desc=f"{ops.c.scheduler}: nodes up", unit="node", file=sys.stderr, disable=None)
            while True:
                want = {n.name for n in ops.members()}
                up = ops.sched.up_nodes() & want
                bar.total, bar.n = len(want), len(up)
                bar.refresh()
                if up == want or time.time() - t0 > args.wait:
                    break
                time.sleep(1)
            bar.close()
        return ops.summary(events=args.events)
    return _act(args, show, lock=False)


def _act(args, fn, lock=True):
    """Run fn(ops) on the cluster (under its lock, unless it only reads); print the cluster's summary."""
    ops = _ops(args, lock)
    try:
        s = fn(ops)
    finally:
        ops.close()
    emit(args, s, render_summary(s))
    return EXIT_OK


def cmd_resize(args):
    return _act(args, lambda ops: ops.resize(args.group, args.size))


def cmd_update(args):
    return _act(args, lambda ops: ops.update(args.group or "default", args.type, args.image))


def cmd_stop(args):
    def stop(ops):
        if ops.c.state == "stopped":
            raise BadInput(f"cluster {ops.c.id} is already stopped")
        return ops.stop(force=args.force)
    return _act(args, stop)


def cmd_attach(args):
    with state.sessions()() as db:
        c = db.get(state.Cluster, args.cluster_id)
        if c is None:
            raise BadInput(f"no cluster {args.cluster_id}: `bcc status --all` lists the clusters bcc knows")
        if c.state in ("stopped", "failed"):
            raise BadInput(f"cluster {c.id} is {c.state}: start a new one with `bcc start`")
    state.set_current(args.cluster_id)
    args.cluster = args.cluster_id
    ops = _ops(args, lock=False)
    try:
        s = ops.summary(events=5)
    finally:
        ops.close()
    emit(args, s, f"attached to {args.cluster_id}\n" + render_summary(s))
    return EXIT_OK


def cmd_reconcile(args):
    while True:
        ops = _ops(args)
        try:
            r = ops.reconcile()
        finally:
            ops.close()
        emit(args, r, f"vanished: {', '.join(r['vanished']) or 'none'}; not in the scheduler: "
                      f"{', '.join(r['not_in_scheduler']) or 'none'}")
        if not args.every:
            return EXIT_OK
        time.sleep(args.every)


def _listing_provider(args):
    from bcc import providers
    cfg = {"bcc_home": state.home()}
    if args.provider == "aws":
        cfg["aws"] = {"region": args.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                      "endpoint_url": args.endpoint_url}
    return providers.get(args.provider, cfg, talk)


def cmd_type(args):
    rows = _listing_provider(args).types()
    emit(args, rows, "\n".join(f"{r['name']:<16} {str(r['cpus']):>5} CPU(s)  {r['memory_gb']} GB  {r['note']}".rstrip()
                               for r in rows))
    return EXIT_OK


def cmd_disk(args):
    rows = _listing_provider(args).disk_types()
    emit(args, rows, "\n".join(f"{r['name']:<10} {r['note']}" for r in rows))
    return EXIT_OK


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="data as JSON on stdout")
    cl = argparse.ArgumentParser(add_help=False)
    cl.add_argument("--cluster", help="cluster id (default: the attached one)")
    prov = argparse.ArgumentParser(add_help=False)
    prov.add_argument("--provider", default="ssh", help="ssh | aws | aliyun (default ssh)")
    prov.add_argument("--region", help="aws region (default $AWS_DEFAULT_REGION or us-east-1)")
    prov.add_argument("--endpoint-url", help="EC2/STS endpoint (default $AWS_ENDPOINT_URL)")

    p = Parser(prog="bcc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", parser_class=Parser)
    s = sub.add_parser("login", parents=[common], help="store credentials (0600)")
    s.add_argument("target", nargs="?", help="PROVIDER/REGION (aws/us-east-1) or ssh/USER")
    s.add_argument("key_id", nargs="?", help="access key id (ssh: private key file)")
    s.add_argument("--endpoint-url", help="check the key against this endpoint ($AWS_ENDPOINT_URL)")
    s.set_defaults(fn=cmd_login)

    s = sub.add_parser("start", parents=[common, prov], help="start a cluster")
    s.add_argument("-n", type=int, required=True, help="nodes per group")
    s.add_argument("-t", "--type", required=True, help="instance type (`bcc type`)")
    s.add_argument("-i", "--image", required=True, help="image (ssh: images/catalog.json; aws: an AMI id)")
    s.add_argument("--vpc_cidr_block", "--vpc-cidr-block", dest="vpc_cidr_block",
                   help="the workers' block, inside the master's network (default: the master's network)")
    s.add_argument("-m", "--mounts", help="nas://SERVER:/PATH:/DST, s3://BUCKET/PREFIX/:/DST, oss://...:/DST, comma-separated")
    s.add_argument("-d", "--disks", help="extra disks per node: SIZE_GB or TYPE:SIZE_GB, comma-separated (`bcc disk`)")
    s.add_argument("--group_num", "--group-num", dest="group_num", type=int, default=1,
                   help="number of groups (default, group1, ...), each of -n nodes")
    s.add_argument("--scheduler", default="sge", help="sge | slurm (default sge)")
    s.add_argument("--hosts", help="ssh: the pool, NAME=USER@ADDRESS[:PORT],...")
    s.add_argument("--master", help="the master: 'local' (bcc runs on it; default) or NAME=USER@ADDRESS[:PORT]")
    s.add_argument("--master-address", help="with --master local: its address on the workers' network")
    s.add_argument("--identity", help="SSH private key (default: the one from `bcc login ssh/USER KEYFILE`)")
    s.add_argument("--host-key", action="append", metavar="NAME=SHA256:FP", help="expected host key fingerprint")
    s.add_argument("--trust-new-host-keys", action="store_true", help="accept and record first-seen host keys")
    s.add_argument("--mount-mode", default="real", choices=("real", "bind"),
                   help="real: fstab + mount (NFS, s3fs); bind: test hosts sharing one filesystem")
    s.add_argument("--object-endpoint", help="endpoint URL for s3:// / oss:// mounts")
    s.add_argument("--ports", help="scheduler ports (SGE qmaster,execd; Slurm slurmctld,slurmd)")
    s.add_argument("--drain-timeout", type=int, default=600, help="seconds to wait for a draining node's jobs (600)")
    s.add_argument("--watchdog", type=int, default=5, help="watchdog period in seconds (5)")
    s.add_argument("--requeue-delay", type=int, default=120,
                   help="Slurm: seconds a requeued job waits before it may start again (its cred_expire; 120)")
    s.add_argument("--vpc-id", help="aws: the master's VPC")
    s.add_argument("--key-name", help="aws: EC2 key pair for the instances")
    s.add_argument("--ssh-user", default="admin", help="aws: login user of the image (Debian: admin)")
    s.set_defaults(fn=cmd_start)

    s = sub.add_parser("status", parents=[common], help="groups, nodes, steps and the scheduler's view")
    s.add_argument("cluster", nargs="?")
    s.add_argument("--all", action="store_true", help="list every cluster")
    s.add_argument("--wait", type=int, default=0, metavar="SECONDS", help="show a progress bar until nodes are up")
    s.add_argument("--events", type=int, default=20, help="how many recent steps to show")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("resize", parents=[common, cl], help="grow or shrink a group (draining first)")
    s.add_argument("group")
    s.add_argument("size", type=int)
    s.set_defaults(fn=cmd_resize)

    s = sub.add_parser("update", parents=[common, cl], help="roll a group to a new type or image")
    s.add_argument("group", nargs="?", help="the group to roll (default: default)")
    s.add_argument("-t", "--type")
    s.add_argument("-i", "--image")
    s.set_defaults(fn=cmd_update)

    s = sub.add_parser("stop", parents=[common, cl], help="drain and release every worker")
    s.add_argument("--force", action="store_true", help="cancel queued and running jobs")
    s.set_defaults(fn=cmd_stop)

    s = sub.add_parser("attach", parents=[common], help="act on CLUSTER_ID from now on")
    s.add_argument("cluster_id")
    s.set_defaults(fn=cmd_attach)

    s = sub.add_parser("reconcile", parents=[common, cl], help="bring the scheduler in step with the provider")
    s.add_argument("--every", type=float, default=0, help="repeat every SECONDS")
    s.set_defaults(fn=cmd_reconcile)

    for name, alias, fn, h in (("type", "t", cmd_type, "instance types"), ("disk", "d", cmd_disk, "disk types")):
        s = sub.add_parser(name, aliases=[alias], parents=[common, prov], help=h)
        s.set_defaults(fn=fn)
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if not getattr(args, "fn", None):
        p.print_help(sys.stderr)
        return EXIT_BAD
    try:
        return cliplumbing.run(args.fn, args, f"bcc {args.cmd}", bad=(BadInput,), failed=(BccError, FileNotFoundError))
    except Exception as e:  # noqa: BLE001 (one line, not a traceback; BCC_DEBUG=1 shows it)
        if os.environ.get("BCC_DEBUG"):
            raise
        talk(f"bcc {args.cmd}: unexpected {type(e).__name__}: {e} (a bug in bcc: run again with BCC_DEBUG=1 "
             "for the traceback, and `bcc status` shows the steps taken)")
        return EXIT_FAILED


def entry():
    sys.exit(main())


if __name__ == "__main__":
    entry()
