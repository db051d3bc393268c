"""Scheduler backends behind one small interface (see base.py): local, drmaa, sge, slurm."""
from master.backends.base import ArraySpec, Backend, JobStatus, get_backend  # noqa: F401
