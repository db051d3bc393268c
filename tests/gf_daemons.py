"""Real daemons for the master's and worker's tests: PostgreSQL, moto_server (S3), SGE, Slurm.

Each is started by the test set-up on 127.0.0.1 and free ports, with secrets made for the run,
and stopped by the tests by PID. SGE and Slurm are set up by the same bootstrap scripts bcc uses
(images/sge/bootstrap.sh, images/slurm/bootstrap.sh). Unavailable -> conftest.need() (fails in CI).
"""
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, need

PG_BIN = "/usr/lib/postgresql/15/bin"
JEMALLOC = "/lib/x86_64-linux-gnu/libjemalloc.so.2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def stop_pid(pid, sig=signal.SIGTERM, timeout=20):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_url():
    """A private PostgreSQL server (initdb + pg_ctl in a temp dir, run as postgres, a free port)."""
    need(os.path.exists(f"{PG_BIN}/initdb"), "PostgreSQL 15 server binaries (apt postgresql-15)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        need(False, "the postgres system user")
    d = tempfile.mkdtemp(prefix="gf-pg-")
    shutil.chown(d, "postgres", "postgres")
    data = os.path.join(d, "data")
    port = free_port()
    pw = secrets.token_hex(16)
    pwfile = os.path.join(d, "pw")
    with open(pwfile, "w") as f:
        f.write(pw)
    shutil.chown(pwfile, "postgres", "postgres")
    run_pg = ["runuser", "-u", "postgres", "--"]
    r = subprocess.run(run_pg + [f"{PG_BIN}/initdb", "-D", data, "-U", "genefarm", "--pwfile", pwfile,
                                 "-A", "scram-sha-256", "--no-sync"], capture_output=True, text=True)
    need(r.returncode == 0, f"initdb failed: {r.stderr[-500:]}")
    r = subprocess.run(run_pg + [f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(d, "log"), "-w", "-t", "60",
                                 "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off",
                                 "start"], capture_output=True, text=True)
    need(r.returncode == 0, f"pg_ctl start failed: {r.stderr[-500:]}")
    with open(os.path.join(data, "postmaster.pid")) as f:
        pid = int(f.readline())
    try:
        yield f"postgresql+psycopg://genefarm:{pw}@127.0.0.1:{port}/postgres"
    finally:
        stop_pid(pid, signal.SIGINT)        # fast shutdown
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- S3 (moto_server)
@contextlib.contextmanager
def moto_server(env=None, prefix="gf-moto-"):
    """moto_server on 127.0.0.1 and a free port (yields its URL); stopped by PID on the way out."""
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    need(os.path.exists(exe), "moto_server (pip install 'moto[server]')")
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False)
    p = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, **(env or {})))
    try:
        need(wait_port(port), f"moto_server did not listen on {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_pid(p.pid, signal.SIGINT, timeout=3)   # moto_server: SIGINT, then SIGKILL if it lingers
        p.wait(10)
        os.unlink(log.name)


@contextlib.contextmanager
def environ(env):
    """os.environ with env set, restored on the way out."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3_endpoint():
    with moto_server() as url, environ({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "gf" + secrets.token_hex(8),
                                        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
                                        "AWS_DEFAULT_REGION": "us-east-1"}):
        yield url


# ---------------------------------------------------------------- SGE
def _source(envfile):
    env = {}
    with open(envfile) as f:
        for line in f:
            if line.startswith("export "):
                k, _, v = line[7:].strip().partition("=")
                env[k] = v
    return env


@pytest.fixture(scope="session")
def sge_env():
    """A single-host SGE cell (qmaster + execd on free ports) via images/sge/bootstrap.sh."""
    need(shutil.which("apt-get") is not None or shutil.which("qsub"), "apt-get or SGE installed")
    state = tempfile.mkdtemp(prefix="gf-sge-")
    script = os.path.join(ROOT, "images", "sge", "bootstrap.sh")
    qp, ep = free_port(), free_port()
    cell = "gf" + secrets.token_hex(4)              # a private cell: its own spool, nothing shared
    r = subprocess.run([script, "start", "--state", state, "--cell", cell, "--qmaster-port", str(qp),
                        "--execd-port", str(ep)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        subprocess.run([script, "stop", "--state", state, "--cell", cell], capture_output=True, timeout=120)
    need(r.returncode == 0, f"SGE bootstrap failed: {r.stderr[-1500:]}")
    env = _source(os.path.join(state, "sge.env"))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run([script, "stop", "--state", state, "--cell", cell], capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


# ---------------------------------------------------------------- Slurm
@pytest.fixture(scope="session")
def slurm_env():
    """A single-host Slurm cluster (munged, slurmctld, slurmd on free ports) via images/slurm/bootstrap.sh."""
    state = tempfile.mkdtemp(prefix="gf-slurm-")
    os.chmod(state, 0o755)
    script = os.path.join(ROOT, "images", "slurm", "bootstrap.sh")
    cluster = "gf" + secrets.token_hex(3)
    r = subprocess.run([script, "start", "--state", state, "--cluster", cluster, "--ctld-port", str(free_port()),
                        "--slurmd-port", str(free_port())], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        subprocess.run([script, "stop", "--state", state], capture_output=True, timeout=120)
    need(r.returncode == 0, f"Slurm bootstrap failed: {r.stderr[-1500:]}")
    env = _source(os.path.join(state, "slurm.env"))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run([script, "stop", "--state", state], capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def drmaa_env(sge):
    """Environment for a process that loads SGE's libdrmaa (jemalloc preloaded at start)."""
    return dict(os.environ, **sge, LD_PRELOAD=JEMALLOC)
