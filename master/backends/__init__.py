"""Scheduler backends behind one small interface (see base.py): local, drmaa, sge, slurm.

The registry is here: base.py defines the interface, each module one implementation, and
get_backend(settings) picks one by name.
"""
from master.backends.base import ArraySpec, Backend, JobStatus  # noqa: F401


def get_backend(settings):
    """The backend named in the settings. `drmaa` falls back to `sge` (native commands) when the
    DRMAA library cannot be loaded, and says so loudly on stderr and in the log."""
    name = settings.backend
    if name == "local":
        from master.backends.local import LocalBackend
        return LocalBackend(settings.dir("jobs"), settings.local_slots, settings.node_memory_mb)
    if name == "drmaa":
        try:
            from master.backends.drmaa_backend import DrmaaBackend
            return DrmaaBackend(settings)
        except Exception as e:  # noqa: BLE001  (any failure to load the library)
            import logging
            import sys
            msg = (f"DRMAA COULD NOT BE LOADED ({type(e).__name__}: {e}); FALLING BACK TO THE NATIVE SGE COMMANDS "
                   f"(qsub/qstat/qacct). Set DRMAA_LIBRARY_PATH (and LD_PRELOAD=libjemalloc.so.2 for SGE's libdrmaa) "
                   f"to use DRMAA.")
            print(f"genefarm: WARNING: {msg}", file=sys.stderr, flush=True)
            logging.getLogger("genefarm").warning(msg)
            name = "sge"
    if name == "sge":
        from master.backends.sge import SgeBackend
        return SgeBackend(settings)
    if name == "slurm":
        from master.backends.slurm import SlurmBackend
        return SlurmBackend(settings)
    raise ValueError(f"unknown backend {name!r}: use local, drmaa, sge or slurm")


