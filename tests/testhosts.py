#!/usr/bin/env python3
"""Test hosts on this one machine: network namespaces with their own address, hostname,
/etc/hosts and local directory, joined by a bridge. The tests' own helper (same names, addresses
and safety as ../shared/tools/testhosts, which tests never use).

    python tests/testhosts.py up N          hosts gfnode1..gfnodeN (10.77.0.11 ..); the root
                                            namespace is 10.77.0.1 = `master`
    python tests/testhosts.py check         exit 0 only if no test address can route off this machine
    python tests/testhosts.py exec NODE CMD...   run CMD on NODE (or on `master`: the root network
                                            namespace with the hostname master and its own files)
    python tests/testhosts.py down          stop every process in the hosts, remove them and the bridge

Safety: the test subnet 10.77.0.0/24 is a connected route on the bridge gfbr0 in the root
namespace and the rest of 10.77.0.0/16 is unreachable, so no packet for a test address follows
the default route off the machine; the hosts have no default route at all. `check()` runs before
any traffic (`up` runs it before and after making the hosts and raises Unsafe when it fails).

What a host has of its own (in a mount namespace of its processes, made by `exec`):
  /etc/hosts              RUN/NAME/hosts: at first only localhost and its own name (bcc writes the rest)
  /var/lib/genefarm-node  RUN/NAME/node: its "local disk" (bcc keeps scheduler state there, so
                          paths are the same on every host but the files are not shared)
Everything else (the rest of the filesystem) is shared by all hosts, as a NAS would be.
Only one set of test hosts may be up at a time: ours or the reference tool's (it leaves
/etc/testhosts); `up` refuses clearly when the other is there. Needs root, iproute2, util-linux.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

BR = "gfbr0"
NET = "10.77.0"
PREFIX = "gfnode"
ROOT_IP = f"{NET}.1"
RUN = "/run/genefarm-testhosts"          # our marker and the hosts' own files
NODE_ROOT = "/var/lib/genefarm-node"      # each host's private directory is bind-mounted here
REFERENCE_MARK = "/etc/testhosts"         # what ../shared/tools/testhosts leaves while its hosts are up
# addresses a test may use, and some it must never reach off the machine
PROBES = [f"{NET}.1", f"{NET}.11", f"{NET}.99", f"{NET}.254", "10.77.5.5"]


class Unsafe(RuntimeError):
    """A test address would leave this machine: no traffic may be sent."""


class Busy(RuntimeError):
    """Another set of test hosts (the reference tool's, or a foreign bridge) is up."""


def address(name):
    if name == "master":
        return ROOT_IP
    assert name.startswith(PREFIX), name
    return f"{NET}.{10 + int(name[len(PREFIX):])}"


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def route_is_safe(route):
    """Is the output of `ip route get ADDR` a route that stays on this machine?"""
    if f"dev {BR}" in route and " via " not in route:
        return True
    return any(w in route for w in ("unreachable", "Network is unreachable", "No route")) or route.startswith("local")


def check():
    """Raise Unsafe unless every probe address routes to the bridge or is unreachable."""
    bad = []
    for ip in PROBES:
        r = _ip("route", "get", ip, check=False)
        route = (r.stdout + r.stderr).strip()
        if not route_is_safe(route):
            bad.append(f"{ip} routes as: {route}")
    if bad:
        raise Unsafe("test addresses could leave this machine, no traffic sent: " + "; ".join(bad))


def namespaces():
    out = _ip("netns", "list", check=False).stdout
    return sorted((ln.split()[0] for ln in out.splitlines() if ln.startswith(PREFIX)),
                  key=lambda n: int(n[len(PREFIX):]))


def is_up():
    return os.path.exists(os.path.join(RUN, "owner"))


def _refuse_foreign():
    if os.path.exists(REFERENCE_MARK):
        raise Busy(f"the reference tool's test hosts are up ({REFERENCE_MARK} exists): take them down with "
                   "`../shared/tools/testhosts down` first; only one set of test hosts may be up at a time")
    if not is_up() and (namespaces() or _ip("link", "show", BR, check=False).returncode == 0):
        raise Busy(f"namespaces {namespaces()} or bridge {BR} exist but were not made by this helper: "
                   "take them down with the tool that made them first")


def _write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _host_dirs(name):
    d = os.path.join(RUN, name)
    os.makedirs(os.path.join(d, "node"), exist_ok=True)
    os.chmod(d, 0o755)
    os.chmod(os.path.join(d, "node"), 0o755)
    _write(os.path.join(d, "hosts"), f"127.0.0.1 localhost\n{address(name)} {name}\n")


def up(n):
    """Make hosts gfnode1..gfnodeN (idempotent for ours); return their names."""
    if os.geteuid() != 0:
        raise PermissionError("test hosts need root (network namespaces)")
    _refuse_foreign()
    os.makedirs(RUN, exist_ok=True)
    os.chmod(RUN, 0o755)
    _write(os.path.join(RUN, "owner"), f"tests/testhosts.py pid {os.getpid()}\n")
    if _ip("link", "show", BR, check=False).returncode != 0:
        _ip("link", "add", BR, "type", "bridge")
        _ip("addr", "add", f"{ROOT_IP}/24", "dev", BR)
        _ip("link", "set", BR, "up")
    _ip("route", "replace", "unreachable", "10.77.0.0/16")
    check()
    _host_dirs("master")
    have = set(namespaces())
    names = [f"{PREFIX}{i}" for i in range(1, n + 1)]
    for name in names:
        _host_dirs(name)
        if name in have:
            continue
        _ip("netns", "add", name)
        _ip("link", "add", f"v-{name}", "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("link", "set", f"v-{name}", "master", BR, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", f"{address(name)}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
    check()
    return names


# The host's own hostname, /etc/hosts and local directory, in a mount namespace of its own.
_ENTER = ('hostname "$0" && mount --bind "$GF_TH_RUN/$0/hosts" /etc/hosts && '
          'mkdir -p "$GF_TH_NODE_ROOT" && mount --bind "$GF_TH_RUN/$0/node" "$GF_TH_NODE_ROOT" && exec "$@"')


def exec_argv(name, argv):
    """argv that runs `argv` on host `name` (`master`: the root network namespace).
    Not `ip netns exec`: it remounts /sys and hides the cgroup tree slurmd needs."""
    net = [] if name == "master" else ["nsenter", f"--net=/run/netns/{name}"]
    return net + ["env", f"GF_TH_RUN={RUN}", f"GF_TH_NODE_ROOT={NODE_ROOT}",
                  "unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", _ENTER, name, *argv]


def host_path(name, path):
    """Where a file under /var/lib/genefarm-node on host `name` is, seen from the root namespace."""
    rel = os.path.relpath(path, NODE_ROOT)
    assert not rel.startswith(".."), path
    return os.path.join(RUN, name, "node", rel)


SSHD_CONFIG = """\
ListenAddress {addr}
Port {port}
HostKey {hostkey}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
MaxStartups 30:30:60
MaxSessions 30
Subsystem sftp internal-sftp
"""


def start_sshd(name, port, hostkey, authorized_keys):
    """sshd on host `name` (key auth only), listening on its address; returns the Popen (its pid is sshd's)."""
    check()
    os.makedirs("/run/sshd", exist_ok=True)
    d = os.path.join(RUN, name)
    cfg = os.path.join(d, "sshd_config")
    _write(cfg, SSHD_CONFIG.format(addr=address(name), port=port, hostkey=hostkey, dir=d,
                                   authorized_keys=authorized_keys))
    log = open(os.path.join(d, "sshd.log"), "ab")
    p = subprocess.Popen(exec_argv(name, ["/usr/sbin/sshd", "-D", "-e", "-f", cfg]), stdout=log, stderr=log,
                         start_new_session=True)
    log.close()
    return p


def _our_processes():
    """PIDs of processes in a namespace this helper made: their mount table holds our bind mounts,
    or their network namespace is one of our hosts'."""
    nets = set()
    for name in namespaces():
        try:
            nets.add(os.stat(f"/run/netns/{name}").st_ino)
        except OSError:
            pass
    mark = "/genefarm-testhosts/"
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in nets:
                pids.append(int(pid))
                continue
            with open(f"/proc/{pid}/mountinfo") as f:
                if mark in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def kill_all(timeout=10):
    """Stop, by PID, every process still running in our hosts (what the tests started there)."""
    pids = _our_processes()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        t0 = time.time()
        while time.time() - t0 < timeout:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
            if not pids:
                return
            time.sleep(0.1)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def down():
    """Remove our hosts, the bridge and the unreachable route (only ours: refuses the reference's)."""
    if os.path.exists(REFERENCE_MARK) and not is_up():
        raise Busy(f"the test hosts up are the reference tool's ({REFERENCE_MARK}): use its `down`")
    kill_all()
    for name in namespaces():
        _ip("netns", "del", name, check=False)
    if _ip("link", "show", BR, check=False).returncode == 0:
        _ip("link", "del", BR, check=False)
    _ip("route", "del", "unreachable", "10.77.0.0/16", check=False)
    shutil.rmtree(RUN, ignore_errors=True)
    try:
        os.rmdir(NODE_ROOT)          # the mount point `exec` made on the shared filesystem, when empty
    except OSError:
        pass


def main(argv):
    if not argv or argv[0] not in ("up", "down", "check", "exec"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "up":
            names = up(int(argv[1]) if len(argv) > 1 else 3)
            print(f"testhosts: up: {' '.join(names)} (master = {ROOT_IP})", file=sys.stderr)
        elif argv[0] == "down":
            down()
            print("testhosts: down", file=sys.stderr)
        elif argv[0] == "check":
            check()
            print("testhosts: safe", file=sys.stderr)
        else:
            check()
            os.execvp("nsenter" if argv[1] != "master" else "env", exec_argv(argv[1], argv[2:]))
    except (Unsafe, Busy, PermissionError) as e:
        print(f"testhosts: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
