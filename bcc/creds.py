"""Credentials: `bcc login PROVIDER/REGION KEY_ID` keeps them in GENEFARM_HOME/bcc/credentials.json.

The file is created with mode 0600 (and re-checked on every read: a file others can read is
refused, with the chmod to run). The secret comes from a prompt (getpass) or the environment
(BCC_SECRET, or the provider's own variable such as AWS_SECRET_ACCESS_KEY), never from argv,
and is never printed or logged: `bcc login --json` shows the key id and the file, not the secret.
"""
import json
import os
import stat

from bcc import state
from bcc.errors import BadInput, BccError

SECRET_ENVS = {"aws": ("BCC_SECRET", "AWS_SECRET_ACCESS_KEY"), "aliyun": ("BCC_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
               "ssh": ("BCC_SECRET",)}


def path(base=None):
    return os.path.join(base or state.home(), "credentials.json")


def _read(base=None):
    p = path(base)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return {}
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BccError(f"{p} can be read by others (mode {stat.S_IMODE(st.st_mode):o}): run `chmod 600 {p}`, "
                       "and consider the secrets in it exposed: rotate them, then `bcc login` again")
    with open(p) as f:
        return json.load(f)


def save(provider_region, key_id, secret, extra=None, base=None):
    data = _read(base)
    data[provider_region] = {"key_id": key_id, "secret": secret, **(extra or {})}
    p = path(base)
    os.makedirs(os.path.dirname(p), mode=0o700, exist_ok=True)
    tmp = p + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)
    return p


def get(provider_region, base=None):
    """(key_id, secret) for PROVIDER/REGION, or for PROVIDER alone; BadInput when there are none."""
    data = _read(base)
    provider = provider_region.split("/")[0]
    c = data.get(provider_region) or next((v for k, v in data.items() if k.split("/")[0] == provider), None)
    if not c:
        raise BadInput(f"no credentials for {provider_region}: run `bcc login {provider_region} KEY_ID` "
                       f"(the secret is asked for, or read from ${SECRET_ENVS.get(provider, ('BCC_SECRET',))[0]})")
    return c


def secret_from_env(provider):
    for name in SECRET_ENVS.get(provider, ("BCC_SECRET",)):
        if os.environ.get(name):
            return os.environ[name]
    return None


def ssh_passphrase(identity, base=None):
    """The passphrase `bcc login ssh/USER KEYFILE` kept for this key file, or None."""
    if not identity:
        return None
    want = os.path.abspath(identity)
    for k, v in _read(base).items():
        if k.split("/")[0] == "ssh" and v.get("key_id") == want:
            return v.get("secret") or None
    return None
