"""The one seam to the hosts: run a command, put or get a file, over SSH (paramiko) or locally.

Host keys are verified against bcc's own known_hosts (GENEFARM_HOME/bcc/known_hosts). A host
whose key is not there is refused unless the user gave its expected fingerprint
(`--host-key NAME=SHA256:...`, checked, then recorded) or passed `--trust-new-host-keys`
(recorded, and the fingerprint is shown). A host whose key changed is always refused.
"""
import base64
import hashlib
import os
import shlex
import socket
import subprocess
import threading

from bcc import state
from bcc.errors import BadInput, BccError


def fingerprint(key):
    """OpenSSH's SHA256 fingerprint of a paramiko key (what `ssh-keygen -lf` prints)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def known_hosts_path(base=None):
    return os.path.join(base or state.home(), "known_hosts")


class HostKeyPolicy:
    """paramiko MissingHostKeyPolicy: new keys only with an expected fingerprint or explicit trust."""

    def __init__(self, path, label, expected=None, trust_new=False, talk=None):
        self.path, self.label, self.expected, self.trust_new, self.talk = path, label, expected, trust_new, talk
        self.lock = threading.Lock()

    def missing_host_key(self, client, hostname, key):
        fp = fingerprint(key)
        if self.expected:
            if self.expected != fp:
                raise BccError(f"host key of {self.label} ({hostname}) is {fp}, not the expected {self.expected}: this "
                               "may not be the host you meant (or a man in the middle); check the fingerprint on the "
                               "host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and try again")
        elif not self.trust_new:
            raise BadInput(f"{self.label} ({hostname}) is not in bcc's known hosts ({self.path}) and presented key "
                           f"{fp}: check it on the host, then pass --host-key {self.label}={fp} "
                           "(or --trust-new-host-keys to accept first-seen keys)")
        elif self.talk:
            self.talk(f"bcc: trusting new host key of {self.label} ({hostname}): {fp} (recorded in {self.path})")
        with self.lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            # append our own line (SSHClient.save_host_keys would rewrite the file from one client's view)
            with open(self.path, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            os.chmod(self.path, 0o600)


class Remote:
    """What bcc needs from a host."""
    name = ""

    def run(self, cmd, timeout=600, check=True, input=None):
        raise NotImplementedError

    def put(self, path, data, mode=0o644):
        raise NotImplementedError

    def get(self, path):
        raise NotImplementedError

    def close(self):
        pass


class LocalRemote(Remote):
    """This machine (bcc runs on the master)."""

    def __init__(self, name):
        self.name = name

    def run(self, cmd, timeout=600, check=True, input=None):
        try:
            p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout, input=input)
        except subprocess.TimeoutExpired:
            raise BccError(f"{self.name}: `{cmd[:80]}` did not finish in {timeout} s") from None
        if check and p.returncode != 0:
            raise BccError(f"{self.name}: `{cmd[:120]}` exited {p.returncode}: {(p.stderr or p.stdout).strip()[-800:]}")
        return p.returncode, p.stdout, p.stderr

    def put(self, path, data, mode=0o644):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".bcc-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def get(self, path):
        with open(path, "rb") as f:
            return f.read()


class SSHRemote(Remote):
    def __init__(self, spec, identity, policy, known_hosts, passphrase=None, timeout=15):
        import paramiko
        self.name, self.spec = spec.name or spec.address, spec
        self.client = paramiko.SSHClient()
        if os.path.exists(known_hosts):
            self.client.load_host_keys(known_hosts)
        self.client.set_missing_host_key_policy(policy)
        where = f"{spec.user}@{spec.address}:{spec.port}"
        try:
            self.client.connect(spec.address, port=spec.port, username=spec.user, key_filename=identity,
                                passphrase=passphrase, look_for_keys=False, allow_agent=False, timeout=timeout,
                                banner_timeout=timeout, auth_timeout=timeout)
        except paramiko.BadHostKeyException as e:
            raise BccError(f"host key of {where} CHANGED (now {fingerprint(e.key)}, known {fingerprint(e.expected_key)}):"
                           f" refusing to connect. If the host was rebuilt, remove its line from {known_hosts} and "
                           "connect again with --host-key") from None
        except paramiko.PasswordRequiredException:
            raise BadInput(f"SSH key {identity} has a passphrase: run `bcc login ssh/{spec.user} {identity}` "
                           "(it asks for the passphrase and keeps it 0600)") from None
        except paramiko.AuthenticationException:
            raise BccError(f"{where} refused the SSH key {identity}: add its public key to the host's "
                           "authorized_keys, or give the right key with --identity / `bcc login ssh`") from None
        except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError) as e:
            raise BccError(f"cannot reach {where}: connection refused ({e}): is sshd running there, on that port?") \
                from None
        except (socket.timeout, TimeoutError, OSError, paramiko.SSHException) as e:
            if isinstance(e, BccError):
                raise
            raise BccError(f"cannot reach {where}: {e or type(e).__name__}: check the address and that sshd "
                           "is running") from None
        self._sftp = None
        self.lock = threading.Lock()

    def run(self, cmd, timeout=600, check=True, input=None):
        import select
        import time
        chan = self.client.get_transport().open_session()
        deadline = time.time() + timeout
        try:
            chan.exec_command("bash -c " + shlex.quote(cmd))
            if input is not None:
                chan.sendall(input.encode() if isinstance(input, str) else input)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            exited_at = None
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if chan.exit_status_ready():
                    exited_at = exited_at or time.time()
                    # the output ends at EOF; a daemon that kept the session's stdout open must not
                    # hold us: two seconds after the exit status, what came is what there is
                    if (chan.eof_received or time.time() - exited_at > 2) and not got:
                        break
                if time.time() > deadline:
                    raise BccError(f"{self.name}: `{cmd[:80]}` did not finish in {timeout} s")
                if not got:
                    select.select([chan], [], [], 0.2)
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        o, e = out.decode(errors="replace"), err.decode(errors="replace")
        if check and rc != 0:
            raise BccError(f"{self.name}: `{cmd[:120]}` exited {rc}: {(e or o).strip()[-800:]}")
        return rc, o, e

    def _sftp_client(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def put(self, path, data, mode=0o644):
        d = os.path.dirname(path)
        self.run(f"mkdir -p {shlex.quote(d)}")
        tmp = path + ".bcc-tmp"
        with self.lock:
            sftp = self._sftp_client()
            with sftp.open(tmp, "wb") as f:
                f.chmod(mode)
                f.write(data)
            sftp.posix_rename(tmp, path)

    def get(self, path):
        with self.lock:
            with self._sftp_client().open(path, "rb") as f:
                return f.read()

    def close(self):
        try:
            if self._sftp:
                self._sftp.close()
        finally:
            self.client.close()


def connect(spec, identity, expected=None, trust_new=False, talk=None, base=None, passphrase=None):
    """An SSHRemote for spec (HostSpec), verifying its host key (see the module's doc)."""
    allowed = os.environ.get("BCC_ALLOWED_NETS")       # a guard tests set: never SSH anywhere else
    if allowed:
        import ipaddress
        if not any(ipaddress.IPv4Address(spec.address) in ipaddress.IPv4Network(n) for n in allowed.split(",")):
            raise BccError(f"{spec.address} is outside BCC_ALLOWED_NETS ({allowed}): not connecting")
    if not identity or not os.path.exists(identity):
        raise BadInput(f"SSH key '{identity}' not found: give it with --identity KEYFILE or `bcc login ssh/USER KEYFILE`")
    if passphrase is None:
        from bcc import creds
        passphrase = creds.ssh_passphrase(identity, base)
    kh = known_hosts_path(base)
    expected = expected or {}
    label = spec.name or spec.address
    policy = HostKeyPolicy(kh, label, expected.get(spec.name) or expected.get(spec.address), trust_new, talk)
    return SSHRemote(spec, identity, policy, kh, passphrase=passphrase)
