"""Drive one scheduler backend through its three verbs and print what it said, as JSON.

    python tests/backend_probe.py BACKEND WORKDIR

Run as its own process so that the DRMAA backend can be loaded with jemalloc preloaded. Arrays:
  "codes": 3 elements exiting 0, 3, and killed by SIGKILL (each echoes its index and slots);
  "ranks": 1 element with cpus=1 ranks=2 (SGE parallel environment / Slurm --ntasks);
  "cancel": 2 elements sleeping, cancelled while queued or running.
Also asks about an id the scheduler never gave (must come back UNKNOWN, not raise).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from master import settings as settings_mod  # noqa: E402
from master.backends import ArraySpec, get_backend  # noqa: E402
from master.states import JOB_FINISHED  # noqa: E402

# one line: SGE keeps an argument only up to its first newline
SCRIPT = ('i=${GENEFARM_ARRAY_INDEX:-${SGE_TASK_ID:-$SLURM_ARRAY_TASK_ID}}; '
          'echo "element=$i nslots=${NSLOTS:-} ntasks=${SLURM_NTASKS:-} gftest=$GFTEST"; '
          'case "$MODE:$i" in codes:1) exit 0;; codes:2) exit 3;; codes:3) kill -9 $$;; cancel:*) sleep 120;; esac; '
          'exit 0')


def spec(name, count, d, mode, cpus=1, ranks=1):
    m = os.path.join(d, name)
    os.makedirs(m, exist_ok=True)
    return ArraySpec(name=name, count=count, argv=["/bin/sh", "-c", SCRIPT], manifest=m,
                     log_dir=os.path.join(d, "logs"), cpus=cpus, ranks=ranks,
                     env={"GFTEST": "yes", "MODE": mode})


def wait(b, ids, timeout=90):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = b.status(ids)
        if all(s.state in JOB_FINISHED for s in st.values()):
            return st
        time.sleep(0.5)
    return b.status(ids)


def main(name, d):
    s = settings_mod.load(os.path.join(d, "home"), backend=name, local_slots=2)
    b = get_backend(s)
    out = {"backend": b.name}
    sp = spec("gfprobe-codes", 3, d, "codes")
    t0 = time.time()
    ids = b.submit(sp)
    out["submit_seconds"] = time.time() - t0
    out["ids"] = ids
    st = wait(b, ids)
    out["codes"] = {i: {"state": s.state.value, "exit": s.exit_code, "signal": s.signal, "raw": s.raw}
                    for i, s in st.items()}
    out["logs"] = {}
    for k in range(1, 4):
        p = sp.log_path(k)
        out["logs"][k] = open(p).read() if os.path.exists(p) else None
    sp = spec("gfprobe-ranks", 1, d, "ranks", cpus=1, ranks=2)
    ids = b.submit(sp)
    st = wait(b, ids)
    out["ranks"] = {"state": st[ids[0]].state.value,
                    "log": open(sp.log_path(1)).read() if os.path.exists(sp.log_path(1)) else None}
    sp = spec("gfprobe-cancel", 2, d, "cancel")
    ids = b.submit(sp)
    time.sleep(2)
    b.cancel(ids)
    st = wait(b, ids, 60)
    out["cancel"] = {i: {"state": s.state.value, "signal": s.signal, "raw": s.raw} for i, s in st.items()}
    bogus = {"local": "ffff.1", "sge": "999999.1", "drmaa": "999999.1", "slurm": "999999_1"}[b.name]
    out["bogus"] = b.status([bogus])[bogus].state.value
    b.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
