"""Shared test fixtures and the rule for real daemons and tools.

A test of SGE, Slurm, DRMAA, MPI, SSH, PostgreSQL, S3 or the browser runs against the real
thing, started by the test set-up. When it cannot start: in CI (CI=true) the test FAILS, never
skips; on a developer's machine it skips with the reason. Use `need(condition, reason)`.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "chr20sim")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(ok, reason):
    """Fail (CI) or skip (elsewhere) unless ok."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required in CI but unavailable: {reason}")
    pytest.skip(reason)


def need_tool(name):
    path = shutil.which(name)
    need(path is not None, f"{name} not found on PATH (make test installs it)")
    return path


def venv_bin(name):
    """A tool from the venv the tests run in (mpiexec of the mpich wheel, console scripts)."""
    return os.path.join(os.path.dirname(sys.executable), name)


@pytest.fixture(scope="session")
def tiny():
    """Paths of the shipped sample."""
    return {
        "ref": os.path.join(DATA, "ref.fa.gz"),
        "r1": os.path.join(DATA, "tiny_R1.fastq.gz"),
        "r2": os.path.join(DATA, "tiny_R2.fastq.gz"),
        "truth_tsv": os.path.join(DATA, "tiny.truth.tsv.gz"),
        "truth_vcf": os.path.join(DATA, "truth.vcf.gz"),
    }


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny):
    """The shipped reference indexed once per test session (through the CLI)."""
    d = tmp_path_factory.mktemp("index")
    prefix = str(d / "chr20sim")
    subprocess.run([sys.executable, "-m", "kernels.index", tiny["ref"], prefix], check=True,
                   capture_output=True)
    return prefix


@pytest.fixture(scope="session")
def tiny_bam(tmp_path_factory, tiny, tiny_index):
    """The shipped sample aligned once per session (through the CLI, 2 threads, a read group)."""
    d = tmp_path_factory.mktemp("aligned")
    out = str(d / "tiny.bam")
    subprocess.run([sys.executable, "-m", "kernels.align", tiny_index, tiny["r1"], tiny["r2"], "-o", out,
                    "-t", "2", "-R", r"@RG\tID:tiny\tSM:chr20sim\tPL:ILLUMINA", "-q"], check=True)
    return out
