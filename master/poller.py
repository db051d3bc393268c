"""The poller: its own process (never inside a web worker), running Engine.tick on a timer with
APScheduler. One per GENEFARM_HOME (a lock file makes a second one wait), so no task is
followed twice.

    genefarm poller          (or `python -m master.poller`; `genefarm serve` starts one beside the API)
"""
import datetime
import fcntl
import logging
import os
import signal
import sys
import threading

from master import settings as settings_mod
from master.backends import get_backend
from master.engine import Engine
from master.store import open_store

log = logging.getLogger("genefarm.poller")
WATCH_SECONDS = 0.1      # how often the notify directory is looked at (one stat)


def _ensure_preload(s):
    """SGE's libdrmaa links jemalloc, which cannot be loaded late: re-exec with it preloaded."""
    from master.backends.drmaa_backend import JEMALLOC
    if s.backend == "drmaa" and JEMALLOC not in os.environ.get("LD_PRELOAD", "") and os.path.exists(JEMALLOC) \
            and not os.environ.get("GENEFARM_NO_REEXEC"):
        env = dict(os.environ, LD_PRELOAD=(JEMALLOC + " " + os.environ.get("LD_PRELOAD", "")).strip(),
                   GENEFARM_NO_REEXEC="1")
        os.execve(sys.executable, [sys.executable, "-m", "master.poller"] + sys.argv[1:], env)


def main(argv=None, home=None):
    s = settings_mod.load(home)
    _ensure_preload(s)
    logging.basicConfig(filename=os.path.join(s.dir("logs"), "poller.log"), level=logging.INFO,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    lock = open(os.path.join(s.home, "poller.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"genefarm poller: another poller runs for {s.home}; waiting for it to stop", file=sys.stderr)
        fcntl.flock(lock, fcntl.LOCK_EX)
    lock.write(str(os.getpid()))
    lock.flush()
    _, Session = open_store(s.db_url)
    backend = get_backend(s)
    engine = Engine(s, Session, backend)
    from apscheduler.schedulers.background import BackgroundScheduler
    sched = BackgroundScheduler()
    stop_event = threading.Event()

    def tick():
        try:
            took = engine.tick()
            if took > s.poll_seconds:
                log.info("tick took %.2f s", took)
        except Exception:  # noqa: BLE001  (a bad tick is logged; the next one tries again)
            log.exception("tick failed")

    def stop(_sig, _frame):
        stop_event.set()

    # handlers first, then the scheduler (in its thread); the main thread only waits for a signal
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sched.add_job(tick, "interval", seconds=s.poll_seconds, max_instances=1, coalesce=True,
                  misfire_grace_time=None, id="tick", next_run_time=datetime.datetime.now())
    sched.start()
    print(f"genefarm poller: pid {os.getpid()}, backend {backend.name}, every {s.poll_seconds} s, "
          f"home {s.home}", file=sys.stderr, flush=True)
    log.info("poller started: backend %s", backend.name)
    # a worker that has reported drops a file in the notify directory: tick at once (the next
    # stage starts from the finishing task's report, not a poll period later)
    notify = os.path.join(s.dir("runs"), "reported")
    os.makedirs(notify, exist_ok=True)
    seen = None
    while not stop_event.wait(WATCH_SECONDS):
        try:
            m = os.stat(notify).st_mtime_ns
        except OSError:
            continue
        if seen is not None and m != seen:
            job = sched.get_job("tick")
            if job is not None:
                job.modify(next_run_time=datetime.datetime.now())
        seen = m
    sched.shutdown(wait=False)
    # Stop now: a tick still running is cut short, which is safe (each step of a tick commits on its
    # own, as after a SIGKILL). Closing a scheduler library's session can block (DRMAA): bounded.
    closer = threading.Thread(target=backend.close, daemon=True)
    closer.start()
    closer.join(5)
    log.info("poller stopped")
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
