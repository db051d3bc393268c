"""The one error type for bad input, and the CLI wrapper that turns it into exit code 2.

A message says what is wrong, where (file, line or record) and what to do next. Exit codes
follow DESIGN.md: 0 done, 2 bad input (not retried), 75 temporary failure (retried).
"""
import os
import sys

EXIT_BAD_INPUT = 2
EXIT_TEMPFAIL = 75


class InputError(Exception):
    """Bad input: the user must change something. Exit code 2, never retried."""

    exit_code = EXIT_BAD_INPUT


def run_cli(main, argv=None, prog="genefarm"):
    """Run main(argv): InputError is reported on stderr (no traceback) with exit code 2. When main
    returns, its outputs are complete (written, closed, renamed) and the process ends at once
    (end_now)."""
    try:
        rc = main(argv)
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    end_now(rc or 0)


def end_now(code):
    """Flush stdout and stderr, end MPI if this process started it, and exit without Python's
    teardown. That teardown frees every object and numba's compiled code one by one: 0.10-0.15 s
    of CPU per process once a kernel has run (a whole-bench call takes 4 s, and each MPI rank and
    each task pays it), with nothing left to save. Only for a process whose work is done: threads
    still running are daemons, which a normal exit would not wait for either."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
    os._exit(code)
