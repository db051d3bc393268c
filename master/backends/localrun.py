"""Runner of one local array element: `python -m master.backends.localrun JOBDIR INDEX`.

Forks into the background in a new session (so it outlives the master that started it and
leads the element's process group), writes INDEX.start, runs the array's command with
GENEFARM_ARRAY_INDEX=INDEX and its output in the element's log, and writes INDEX.exit with the
exit code (or the signal), CPU seconds and peak memory of the command.
"""
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time


def _write(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    return int(st[st.rfind(")") + 2:].split()[19])


def main(jobdir, index):
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    i = int(index)
    with open(os.path.join(jobdir, "spec.json")) as f:
        spec = json.load(f)
    pid = os.getpid()
    os.setpgid(0, 0)          # lead a process group of our own: the element is this group
    node = socket.gethostname()
    _write(os.path.join(jobdir, f"{i}.start"), {"pid": pid, "ticks": _ticks(pid), "node": node, "at": time.time()})
    os.makedirs(spec["log_dir"], exist_ok=True)
    log = open(os.path.join(spec["log_dir"], f"{spec['name']}.{i}.log"), "ab")
    devnull = open(os.devnull, "rb")
    env = dict(os.environ, GENEFARM_ARRAY_INDEX=str(i), **spec.get("env", {}))
    child = None

    def forward(signum, _frame):
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    t0 = time.time()
    try:
        child = subprocess.Popen(spec["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=devnull, env=env)
        rc = child.wait()
    except OSError as e:
        log.write(f"genefarm local runner: cannot start {spec['argv'][0]}: {e}\n".encode())
        rc = 127
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    _write(os.path.join(jobdir, f"{i}.exit"),
           {"exit_code": rc if rc >= 0 else 128 - rc, "signal": -rc if rc < 0 else None, "node": node,
            "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3), "peak_mb": round(ru.ru_maxrss / 1024, 1),
            "wall_seconds": round(time.time() - t0, 3)})
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
