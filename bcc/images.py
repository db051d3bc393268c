"""images/: where bcc finds the bootstrap scripts and templates, and how it renders them.

Templates use the bootstrap scripts' own ${NAME} syntax, so a file renders the same from
Python (cloud-init user data, fstab lines) as from bash (scheduler config on the host).
"""
import base64
import io
import json
import os
import re
import tarfile

from bcc.errors import BadInput
from bcc.specs import Mount

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images_dir():
    d = os.environ.get("GENEFARM_IMAGES") or os.path.join(ROOT, "images")
    if not os.path.isdir(os.path.join(d, "common")):
        raise FileNotFoundError(f"bcc: images/ not found at {d}: set GENEFARM_IMAGES to the images directory "
                                "of a genefarm checkout")
    return d


def path(*parts):
    return os.path.join(images_dir(), *parts)


def render_text(text, **values):
    """Replace ${NAME} by values[NAME]; an unknown ${NAME} is an error, not an empty string."""
    def sub(m):
        if m.group(1) not in values:
            raise KeyError(f"template variable ${{{m.group(1)}}} has no value")
        return str(values[m.group(1)])
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", sub, text)


def render(rel, **values):
    with open(path(rel)) as f:
        return render_text(f.read(), **values)


def fstab_line(m: Mount, endpoint=""):
    """The fstab line of one mount (what real clusters get, and test hosts keep in their own fstab)."""
    if m.kind == "nas":
        return render("common/fstab-nas.tmpl", SERVER=m.server, PATH=m.path, DST=m.dst).strip()
    default = {"s3": "https://s3.amazonaws.com", "oss": "https://oss-cn-hangzhou.aliyuncs.com"}[m.kind]
    return render(f"common/fstab-{m.kind}.tmpl", BUCKET=m.bucket, PREFIX=m.prefix.rstrip("/"), DST=m.dst,
                  ENDPOINT=endpoint or default).strip()


def catalog():
    """images/catalog.json: the images the ssh provider knows (name -> description, extra packages)."""
    with open(path("catalog.json")) as f:
        return json.load(f)


def check_image(name):
    cat = catalog()
    if name not in cat:
        raise BadInput(f"unknown image '{name}': the images are {', '.join(sorted(cat))} (images/catalog.json)")
    return cat[name]


USER_DATA_LIMIT = 16384          # EC2's limit on user data, in bytes


def payload(scheduler=None):
    """images/ as a gzipped tar (the bootstrap scripts and templates a node needs), deterministic;
    with scheduler, only common/ and that scheduler's directory (small enough for user data)."""
    buf = io.BytesIO()
    d = images_dir()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for sub in sorted(os.listdir(d)):
            if sub in ("docker",) or sub.startswith(".") or (scheduler and sub not in ("common", scheduler)):
                continue
            full = os.path.join(d, sub)
            for dirpath, dirnames, files in os.walk(full):
                dirnames.sort()
                for fn in sorted(files):
                    if fn.endswith((".pyc", ".md")):
                        continue
                    fp = os.path.join(dirpath, fn)
                    info = tar.gettarinfo(fp, arcname=os.path.relpath(fp, d))
                    info.uid = info.gid = 0
                    info.uname = info.gname = "root"
                    info.mtime = 0
                    with open(fp, "rb") as f:
                        tar.addfile(info, f)
    return buf.getvalue()


def user_data(role, scheduler, image, hosts, fstab_lines, node_root, cluster_id):
    """cloud-init user data (a shell script) for an aws worker: unpack images/, install the
    scheduler's packages, write /etc/hosts and the mounts. The join (munge key, cell) goes over SSH."""
    text = render("cloud-init/user-data.sh.tmpl", ROLE=role, SCHEDULER=scheduler, IMAGE=image,
                  HOSTS=" ".join(f"{n}={a}" for n, a in hosts), FSTAB="\n".join(fstab_lines),
                  NODE_ROOT=node_root, CLUSTER_ID=cluster_id,
                  PAYLOAD=base64.b64encode(payload(scheduler)).decode())
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"user data is {len(text.encode())} bytes, over EC2's {USER_DATA_LIMIT}: images/ grew too big")
    return text
