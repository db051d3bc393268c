"""API tokens: made per install, shown once (written to GENEFARM_HOME/token, mode 0600), stored
only as a salted hash (werkzeug.security). A token reads `gf<id>_<secret>`: the id finds its row."""
import hashlib
import os
import secrets
import threading

from werkzeug.security import check_password_hash, generate_password_hash

from master.store import Token

HASH_METHOD = "pbkdf2:sha256:200000"
_ok = set()                  # sha256 of tokens already verified by this process (pbkdf2 is slow on purpose)
_lock = threading.Lock()


def new_token(db, name="default"):
    """Make a token, store its hash, return the token itself (the only time it exists in clear)."""
    secret = secrets.token_urlsafe(32)
    t = Token(name=name, hash="")
    db.add(t)
    db.flush()
    token = f"gf{t.id}_{secret}"
    t.hash = generate_password_hash(token, method=HASH_METHOD)
    db.commit()
    return token


def verify(db, token):
    if not token or not token.startswith("gf") or "_" not in token:
        return False
    digest = hashlib.sha256(token.encode()).hexdigest()
    with _lock:
        if digest in _ok:
            return True
    tid = token[2:token.index("_")]
    if not tid.isdigit():
        return False
    row = db.get(Token, int(tid))
    if row is None or not row.hash or not check_password_hash(row.hash, token):
        return False
    with _lock:
        _ok.add(digest)
    return True


def ensure_token(settings, db):
    """The install's token file; made (with its hash in the store) the first time."""
    path = settings.token_file
    if os.path.exists(path):
        with open(path) as f:
            tok = f.read().strip()
        if verify(db, tok):
            return tok
    tok = new_token(db)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(tok + "\n")
    os.replace(path + ".tmp", path)
    return tok
