"""Fixtures for bcc's tests on test hosts: gfnode1..3 + the master (10.77.0.1), each running sshd
with host keys and a client key made for the run, through tests/testhosts.py (which checks that
no test address can leave this machine before any packet is sent). Everything is taken down at
the end: sshd by PID, then every process left in the hosts, then the namespaces."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

import testhosts
from conftest import ROOT, need
from gf_daemons import free_port

N_HOSTS = 3
BCC = [sys.executable, "-m", "bcc"]


def _wait_port(addr, port, timeout=20):
    import socket
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with socket.create_connection((addr, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _keygen(path, comment):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path], check=True)
    out = subprocess.run(["ssh-keygen", "-lf", path + ".pub"], capture_output=True, text=True, check=True).stdout
    return out.split()[1]          # SHA256:...


class Hosts:
    def __init__(self, d):
        self.dir = d
        self.key = os.path.join(d, "client_key")
        self.fingerprints = {}
        self.sshd = {}
        self.port = {}

    def spec(self, name):
        return f"{name}=root@{testhosts.address(name)}:{self.port[name]}"

    def host_key_args(self, names):
        return [a for n in names for a in ("--host-key", f"{n}={self.fingerprints[n]}")]

    def on(self, name, cmd, check=True, timeout=120):
        """Run cmd on a host inside its sshd's namespaces (where bcc's mounts and daemons are)."""
        pid = self.sshd[name].pid
        r = subprocess.run(["nsenter", "-t", str(pid), "--mount", "--uts", "--net", "bash", "-c", cmd],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{name}: {cmd} -> {r.returncode}: {r.stderr[-1500:]}")
        return r.stdout

    def node_file(self, name, path):
        return testhosts.host_path(name, path)


@pytest.fixture(scope="module")
def hosts():
    need(os.geteuid() == 0, "root (network namespaces)")
    for tool in ("ip", "nsenter", "unshare", "ssh-keygen"):
        need(shutil.which(tool) is not None, f"{tool} (make test installs iproute2, util-linux, openssh-client)")
    need(os.path.exists("/usr/sbin/sshd"), "sshd (make test installs openssh-server)")
    try:
        names = testhosts.up(N_HOSTS)
    except testhosts.Busy as e:
        need(False, str(e))
    except testhosts.Unsafe as e:
        testhosts.down()
        pytest.fail(f"test hosts are not safe, no traffic sent: {e}")
    d = tempfile.mkdtemp(prefix="gf-bcc-hosts-")
    os.chmod(d, 0o755)
    h = Hosts(d)
    try:
        testhosts.check()           # before any packet: fails the test when a test address could leave
        _keygen(h.key, "bcc-test-client")
        auth = os.path.join(d, "authorized_keys")
        shutil.copy(h.key + ".pub", auth)
        os.chmod(auth, 0o644)
        for name in ["master"] + names:
            hk = os.path.join(d, f"hostkey-{name}")
            h.fingerprints[name] = _keygen(hk, name)
            port = 22 if name != "master" else free_port()
            h.port[name] = port
            h.sshd[name] = testhosts.start_sshd(name, port, hk, auth)
        for name, p in h.sshd.items():
            ok = _wait_port(testhosts.address(name), h.port[name])
            need(ok, f"sshd on {name} did not listen (see {testhosts.RUN}/{name}/sshd.log)")
        yield h
    finally:
        for p in h.sshd.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        testhosts.down()
        shutil.rmtree(d, ignore_errors=True)


def _env(home, env):
    return dict(os.environ, GENEFARM_HOME=home, PYTHONPATH=ROOT, BCC_ALLOWED_NETS="127.0.0.0/8,10.77.0.0/24",
                **(env or {}))


def bcc_background(home, *args):
    """The bcc CLI running in the background (a Popen with stdout and stderr piped)."""
    return subprocess.Popen(BCC + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(home, None), cwd=ROOT)


def bcc(home, *args, check=None, timeout=900, env=None):
    """Run the bcc CLI; (returncode, stdout, stderr). check: the exit code expected."""
    r = subprocess.run(BCC + list(args), capture_output=True, text=True, timeout=timeout, env=_env(home, env), cwd=ROOT)
    if check is not None:
        assert r.returncode == check, f"bcc {' '.join(args)} -> {r.returncode}, expected {check}\n{r.stderr[-4000:]}"
    return r.returncode, r.stdout, r.stderr
