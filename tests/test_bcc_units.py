"""bcc without daemons: input checks, credentials file, templates and what they render, the
watchdog, host-key policy, the test-host helper's route check, the CLI's exit codes."""
import base64
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import ROOT, need

sys.path.insert(0, ROOT)
from bcc import creds, images, specs  # noqa: E402
from bcc.errors import BadInput  # noqa: E402

import testhosts  # noqa: E402

IMAGES = os.path.join(ROOT, "images")


def bcc(home, *args, env=None, input=None):
    e = {k: v for k, v in os.environ.items() if k not in ("BCC_SECRET", "AWS_SECRET_ACCESS_KEY")}
    # BCC_ALLOWED_NETS: were a check to let a start through, bcc still could not SSH off this machine
    e.update(GENEFARM_HOME=str(home), PYTHONPATH=ROOT, BCC_ALLOWED_NETS="127.0.0.0/8", **(env or {}))
    return subprocess.run([sys.executable, "-m", "bcc", *args], capture_output=True, text=True, env=e, cwd=ROOT,
                          input=input, timeout=120)


# ------------------------------------------------------------------ specs
def test_mount_specs():
    ms = specs.parse_mounts("nas://fs1:/export/data:/data,oss://my-bucket/refs/:/refs,s3://b.x-1/:/s3")
    assert [(m.kind, m.dst, m.read_only) for m in ms] == [("nas", "/data", False), ("oss", "/refs", True),
                                                          ("s3", "/s3", True)]
    assert ms[0].server == "fs1" and ms[0].path == "/export/data"
    assert ms[1].bucket == "my-bucket" and ms[1].prefix == "refs/"
    assert specs.parse_mounts("") == []


@pytest.mark.parametrize("bad", [
    "nas://fs1/export:/data",          # no colon after the server
    "nas://fs1:export:/data",          # relative export
    "nas://fs1:/export:data",          # relative mount point
    "oss://Bad_Bucket/x/:/refs",       # bucket name
    "ftp://host/x:/y",                 # unknown scheme
    "s3://bucket/x/:/etc",             # hides a system directory
    "nas://fs1:/a:/data,nas://fs2:/b:/data",   # same mount point twice
    "nas://fs1:/a b:/data",            # space
    "s3://bucket/../x:/y",
])
def test_bad_mount_specs(bad):
    with pytest.raises(BadInput) as e:
        specs.parse_mounts(bad)
    assert "mount" in str(e.value)


def test_disks_hosts_cidr():
    import ipaddress
    assert specs.parse_disks("100,gp2:20", ["gp3", "gp2"], "gp3") == [specs.Disk("gp3", 100), specs.Disk("gp2", 20)]
    for bad in ("0", "x", "gp9:10", "gp3:99999"):
        with pytest.raises(BadInput):
            specs.parse_disks(bad, ["gp3", "gp2"], "gp3")
    h = specs.parse_host("gfnode1=root@10.77.0.11:2222")
    assert (h.name, h.user, h.address, h.port) == ("gfnode1", "root", "10.77.0.11", 2222)
    assert specs.parse_host("10.0.0.5").user == "root"
    for bad in ("node1=root@host.example", "n=root@10.0.0.300", "n=root@10.0.0.1:70000", "a b"):
        with pytest.raises(BadInput):
            specs.parse_host(bad)
    with pytest.raises(BadInput):
        specs.parse_hosts("a=root@10.0.0.1,a=root@10.0.0.2")
    net = ipaddress.IPv4Network("10.77.0.0/24")
    assert str(specs.parse_cidr("10.77.0.128/25", net)) == "10.77.0.128/25"
    with pytest.raises(BadInput) as e:
        specs.parse_cidr("10.78.0.0/24", net)
    assert "outside the master's network 10.77.0.0/24" in str(e.value)
    with pytest.raises(BadInput):
        specs.parse_cidr("10.77.0.1/24", net)          # host bits set
    with pytest.raises(BadInput):
        specs.parse_cidr("nonsense", net)


# ------------------------------------------------------------------ templates
def test_fstab_lines_rendered_from_templates():
    ms = specs.parse_mounts("nas://fs1:/export/data:/data,s3://refs-bucket/hg38/:/refs,oss://obk/x/:/o")
    lines = [images.fstab_line(m, "") for m in ms]
    assert lines[0] == "fs1:/export/data /data nfs4 rw,hard,noatime,_netdev,nofail 0 0"
    assert lines[1] == "s3fs#refs-bucket:/hg38 /refs fuse ro,_netdev,nofail,allow_other,url=https://s3.amazonaws.com 0 0"
    assert lines[2].startswith("ossfs#obk:/x /o fuse ro,")
    assert images.fstab_line(ms[1], "http://127.0.0.1:9").endswith("url=http://127.0.0.1:9 0 0")
    with pytest.raises(KeyError):
        images.render_text("${NOPE}")


def test_hosts_script_keeps_the_rest_and_writes_in_place(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("127.0.0.1 localhost\n10.0.0.9 mine\n")
    ino = os.stat(f).st_ino
    sh = os.path.join(IMAGES, "common", "hosts.sh")
    subprocess.run([sh, str(f), "master=10.77.0.1 gfnode1=10.77.0.11"], check=True)
    subprocess.run([sh, str(f), "master=10.77.0.1 gfnode2=10.77.0.12"], check=True)
    text = f.read_text()
    assert text.startswith("127.0.0.1 localhost\n10.0.0.9 mine\n")
    assert "10.77.0.12 gfnode2" in text and "gfnode1" not in text and text.count("genefarm-bcc begin") == 1
    assert os.stat(f).st_ino == ino                       # a bind-mounted /etc/hosts stays the same file
    subprocess.run([sh, str(f), ""], check=True)
    assert f.read_text() == "127.0.0.1 localhost\n10.0.0.9 mine\n"
    r = subprocess.run([sh, str(f), "x=10.0.0.1;rm"], capture_output=True, text=True)
    assert r.returncode == 2 and "bad address" in r.stderr


def test_mounts_script_bind_mode(tmp_path):
    """mounts.sh in a private mount namespace: the NAS line becomes a read-write bind mount, the
    object-store line is recorded (and said to be), release undoes both."""
    need(os.geteuid() == 0, "root (a private mount namespace)")
    src, dst = tmp_path / "export", tmp_path / "mnt"
    src.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text("# keep me\n")
    lines = f"master:{src} {dst} nfs4 rw,hard 0 0\ns3fs#b:/p {tmp_path}/refs fuse ro 0 0\n"
    sh = os.path.join(IMAGES, "common", "mounts.sh")
    script = (f"{sh} apply --mode bind --fstab {fstab} && echo hi > {dst}/f && mountpoint -q {dst} && "
              f"{sh} release --mode bind --fstab {fstab} && ! mountpoint -q {dst}")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], input=lines,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (src / "f").read_text() == "hi\n"
    assert "not mounted (test host" in r.stderr
    assert fstab.read_text() == "# keep me\n"
    # the mount points it made are gone again; one that was there before stays
    assert not dst.exists() and not (tmp_path / "refs").exists()
    (tmp_path / "had").mkdir()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"{sh} apply --mode bind --fstab {fstab} && grep -c made-by-bcc {fstab} && "
                        f"{sh} release --mode bind --fstab {fstab}"],
                       input=f"master:{src} {tmp_path}/had nfs4 rw 0 0\nmaster:{src} {tmp_path}/new/deep nfs4 rw 0 0\n",
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    assert (tmp_path / "had").is_dir() and not (tmp_path / "new").exists()


def test_watchdog_restarts_a_dead_daemon(tmp_path):
    """watchdog.sh with a stand-in daemon: kill it, the restart command runs and a new one lives."""
    pidf = tmp_path / "d.pid"
    starter = tmp_path / "start.sh"
    starter.write_text(f"#!/bin/sh\nsetsid sleep 300 </dev/null >/dev/null 2>&1 &\necho $! > {pidf}\n"
                       f"echo started >> {tmp_path}/starts\n")
    starter.chmod(0o755)
    subprocess.run([str(starter)], check=True)
    first = int(pidf.read_text())
    log = tmp_path / "wd.log"
    wd = subprocess.Popen([os.path.join(IMAGES, "common", "watchdog.sh"), "--interval", "0.3", "--log", str(log),
                           "--pidfile", str(pidf), "--", str(starter)])
    try:
        time.sleep(1)
        assert (tmp_path / "starts").read_text().count("started") == 1      # alive: left alone
        os.kill(first, 9)
        t0 = time.time()
        while time.time() - t0 < 10 and int(pidf.read_text() or 0) == first:
            time.sleep(0.1)
        second = int(pidf.read_text())
        assert second != first and os.path.exists(f"/proc/{second}")
        assert "not running: d (pid %d); restarting" % first in log.read_text()
    finally:
        wd.terminate()
        wd.wait(10)
        for p in (first, int(pidf.read_text())):
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
    assert "stopping" in log.read_text()


def test_user_data_carries_the_images(tmp_path):
    ud = images.user_data("worker", "slurm", "debian12", [("master", "10.0.0.1"), ("n1", "10.0.0.5")],
                          ["fs:/x /data nfs4 rw,hard 0 0"], "/var/lib/genefarm-node", "c-12345678")
    assert ud.startswith("#!/bin/bash\n") and len(ud.encode()) <= images.USER_DATA_LIMIT
    assert "'master=10.0.0.1 n1=10.0.0.5'" in ud and "fs:/x /data nfs4 rw,hard 0 0" in ud
    assert "munge.key" not in ud                                       # no secret in user data
    payload = ud.split("<<'GENEFARM_PAYLOAD'\n")[1].split("\nGENEFARM_PAYLOAD")[0]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(payload))) as tar:
        names = tar.getnames()
        assert "slurm/bootstrap.sh" in names and "common/watchdog.sh" in names and "sge/bootstrap.sh" not in names
        assert tar.extractfile("slurm/bootstrap.sh").read() == open(os.path.join(IMAGES, "slurm/bootstrap.sh"), "rb").read()
    r = subprocess.run(["bash", "-n"], input=ud, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr


def test_dockerfiles_one_per_role():
    d = os.path.join(IMAGES, "docker")
    roles = {"sge-master": ("sge", "master"), "sge-exec": ("sge", "exec"),
             "slurm-controller": ("slurm", "controller"), "slurm-node": ("slurm", "node")}
    assert sorted(os.listdir(d)) == sorted(f"{r}.Dockerfile" for r in roles)
    for role, (sched, r) in roles.items():
        text = open(os.path.join(d, f"{role}.Dockerfile")).read()
        assert "FROM debian:12\n" in text
        assert "COPY images/ /opt/genefarm/images/" in text
        assert f"/opt/genefarm/images/{sched}/packages.txt" in text
        entry = json.loads(text.split("ENTRYPOINT ")[1].splitlines()[0])
        assert entry == ["/opt/genefarm/images/common/container-entry.sh", sched, r]
        # the role is one the bootstrap accepts
        boot = open(os.path.join(IMAGES, sched, "bootstrap.sh")).read()
        assert f"{r})" in boot or f"|{r}" in boot or f"{r}|" in boot
    assert os.access(os.path.join(IMAGES, "common", "container-entry.sh"), os.X_OK)


def test_bootstrap_scripts_parse_and_refuse_bad_roles(tmp_path):
    for sched in ("sge", "slurm"):
        sh = os.path.join(IMAGES, sched, "bootstrap.sh")
        assert subprocess.run(["bash", "-n", sh]).returncode == 0
    r = subprocess.run([os.path.join(IMAGES, "slurm", "bootstrap.sh"), "start", "--role", "bogus", "--state",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "--role must be" in r.stderr


def test_catalog_images():
    cat = images.catalog()
    assert "debian12" in cat and all("packages" in v for v in cat.values())
    with pytest.raises(BadInput) as e:
        images.check_image("windows")
    assert "unknown image 'windows'" in str(e.value)


# ------------------------------------------------------------------ credentials and login
def test_credentials_file_is_private(tmp_path):
    base = str(tmp_path)
    p = creds.save("aws/us-east-1", "AKIDEXAMPLE", "s3cr3t-value", base=base)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert creds.get("aws/us-east-1", base=base)["secret"] == "s3cr3t-value"
    assert creds.get("aws/eu-west-1", base=base)["key_id"] == "AKIDEXAMPLE"      # same provider, other region
    os.chmod(p, 0o644)
    with pytest.raises(Exception) as e:
        creds.get("aws/us-east-1", base=base)
    assert "chmod 600" in str(e.value)
    with pytest.raises(BadInput):
        creds.get("aliyun/cn-hangzhou", base=str(tmp_path / "none"))


def test_login_ssh_key_wrong_passphrase_and_secret_never_shown(tmp_path):
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "right-pass", "-f", str(key)], check=True)
    home = tmp_path / "home"
    r = bcc(home, "login", "ssh/root", str(key), "--json", env={"BCC_SECRET": "wrong-pass"})
    assert r.returncode == 1 and "wrong passphrase" in r.stderr and "wrong-pass" not in r.stderr + r.stdout
    assert not (home / "bcc" / "credentials.json").exists()
    r = bcc(home, "login", "ssh/root", str(key), "--json", env={"BCC_SECRET": "right-pass"})
    assert r.returncode == 0, r.stderr
    assert "right-pass" not in r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["key_id"] == str(key) and "secret" not in data
    assert stat.S_IMODE(os.stat(home / "bcc" / "credentials.json").st_mode) == 0o600
    # no secret in the environment and no terminal: refused, never read from argv
    r = bcc(home, "login", "ssh/root", str(key), input="")
    assert r.returncode == 2 and "never on the command line" in r.stderr


# ------------------------------------------------------------------ CLI bad input
def test_cli_bad_input_exit_2(tmp_path):
    home = tmp_path / "home"
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    base = ["start", "-n", "1", "--hosts", "gfnode1=root@10.77.0.11", "--identity", str(key), "--master",
            "master=root@10.77.0.1"]
    cases = [
        (base + ["-t", "cpu1", "-i", "debian12", "-m", "nas://fs:/x"], "malformed"),
        (base + ["-t", "huge", "-i", "debian12"], "unknown instance type 'huge'"),
        (base + ["-t", "cpu1", "-i", "win11"], "unknown image 'win11'"),
        (base + ["-t", "cpu1", "-i", "debian12", "-d", "50"], "cannot attach disks"),
        (base + ["-t", "cpu1", "-i", "debian12", "--scheduler", "pbs"], "unknown scheduler"),
        (base + ["-t", "cpu1", "-i", "debian12", "--provider", "gcp"], "unknown provider"),
        (["start", "-n", "1", "-t", "cpu1", "-i", "debian12", "--hosts", "nonsense host"], "malformed"),
        (["resize", "default", "2"], "no cluster given"),
        (["attach", "c-nosuch"], "no cluster c-nosuch"),
        (["start", "-n", "x"], "invalid int"),
        (base + ["-t", "cpu1", "-i", "debian12", "--requeue-delay", "1"], "give 5 to 3600 seconds"),
    ]
    for argv, want in cases:
        r = bcc(home, *argv)
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert want in r.stderr, (argv, r.stderr)
    # nothing was recorded by any of them
    r = bcc(home, "status", "--all", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["clusters"] == []


def test_aliyun_fails_loudly(tmp_path):
    r = bcc(tmp_path, "type", "--provider", "aliyun")
    assert r.returncode == 1 and "not available in this version" in r.stderr
    r = bcc(tmp_path, "start", "-n", "1", "-t", "ecs.g6.large", "-i", "debian12", "--provider", "aliyun")
    assert r.returncode == 1 and "aliyun (ECS) provider is not available" in r.stderr


def test_type_and_disk_listings(tmp_path):
    r = bcc(tmp_path, "t", "--json")
    assert r.returncode == 0 and {t["name"] for t in json.loads(r.stdout)} >= {"host", "cpu1", "cpu2"}
    r = bcc(tmp_path, "d", "--provider", "ssh")
    assert r.returncode == 0 and "local" in r.stdout


# ------------------------------------------------------------------ host keys
def test_host_key_policy(tmp_path):
    import paramiko

    from bcc.errors import BccError
    from bcc.remote import HostKeyPolicy, fingerprint
    key = paramiko.Ed25519Key.from_private_key_file(_keyfile(tmp_path))
    fp = fingerprint(key)
    pub = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "hk.pub")], capture_output=True, text=True).stdout
    assert pub.split()[1] == fp                                   # same as OpenSSH's
    kh = str(tmp_path / "known_hosts")
    client = paramiko.SSHClient()
    with pytest.raises(BadInput) as e:
        HostKeyPolicy(kh, "n1").missing_host_key(client, "10.0.0.1", key)
    assert fp in str(e.value) and "--host-key n1=" in str(e.value)
    with pytest.raises(BccError):
        HostKeyPolicy(kh, "n1", expected="SHA256:other").missing_host_key(client, "10.0.0.1", key)
    assert not os.path.exists(kh)
    HostKeyPolicy(kh, "n1", expected=fp).missing_host_key(client, "[10.0.0.1]:2222", key)
    said = []
    HostKeyPolicy(kh, "n2", trust_new=True, talk=said.append).missing_host_key(client, "10.0.0.2", key)
    assert fp in said[0]
    lines = open(kh).read().splitlines()
    assert lines[0].startswith("[10.0.0.1]:2222 ssh-ed25519 ") and lines[1].startswith("10.0.0.2 ssh-ed25519 ")
    assert stat.S_IMODE(os.stat(kh).st_mode) == 0o600


def _keyfile(tmp_path):
    p = tmp_path / "hk"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(p)], check=True)
    return str(p)


# ------------------------------------------------------------------ test-host safety
@pytest.mark.parametrize("route,safe", [
    ("10.77.0.11 dev gfbr0 src 10.77.0.1 uid 0", True),
    ("local 10.77.0.1 dev lo table local src 10.77.0.1 uid 0", True),
    ("RTNETLINK answers: Network is unreachable", True),
    ("unreachable 10.77.5.5 uid 0", True),
    ("10.77.0.11 via 172.17.0.1 dev eth0 src 172.17.0.2 uid 0", False),
    ("10.77.5.5 via 10.0.0.1 dev gfbr0 src 10.77.0.1", False),
    ("10.77.0.11 dev eth0 src 10.0.2.15", False),
])
def test_testhosts_route_check(route, safe):
    assert testhosts.route_is_safe(route) is safe


def test_testhosts_refuses_when_the_reference_hosts_are_up(monkeypatch, tmp_path):
    mark = tmp_path / "testhosts"
    mark.mkdir()
    monkeypatch.setattr(testhosts, "REFERENCE_MARK", str(mark))
    with pytest.raises(testhosts.Busy) as e:
        testhosts._refuse_foreign()
    assert "only one set of test hosts" in str(e.value)


def test_ssh_passphrase_kept_by_login_is_found_by_key_file(tmp_path):
    base = str(tmp_path)
    key = str(tmp_path / "id_ed25519")
    creds.save("ssh/root", key, "pass-phrase-1", base=base)
    creds.save("aws/us-east-1", key, "not-an-ssh-secret", base=base)
    assert creds.ssh_passphrase(key, base=base) == "pass-phrase-1"
    assert creds.ssh_passphrase(str(tmp_path / "other"), base=base) is None
    assert creds.ssh_passphrase(None, base=base) is None
