"""The one module that runs scheduler commands (qsub, qstat, sbatch, ...): unit tests replace `run`."""
import subprocess

from master.backends.base import BackendError

TIMEOUT = 60


def run(argv, env=None, timeout=TIMEOUT, check=True, input=None):
    """Run argv; (stdout, stderr, returncode). BackendError when it cannot run, times out, or
    (check) exits non-zero."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, input=input)
    except FileNotFoundError:
        raise BackendError(f"{argv[0]}: command not found (is the scheduler's client installed and on PATH?)") \
            from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{' '.join(argv[:3])}...: no answer in {timeout} s") from None
    if check and p.returncode != 0:
        raise BackendError(f"{' '.join(argv[:4])}... exited {p.returncode}: {(p.stderr or p.stdout).strip()[:500]}")
    return p.stdout, p.stderr, p.returncode
