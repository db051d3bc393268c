"""The one error type for bad input, and the CLI wrapper that turns it into exit code 2.

A message says what is wrong, where (file, line or record) and what to do next. Exit codes
follow DESIGN.md: 0 done, 2 bad input (not retried), 75 temporary failure (retried).
"""
import sys

EXIT_BAD_INPUT = 2
EXIT_TEMPFAIL = 75


class InputError(Exception):
    """Bad input: the user must change something. Exit code 2, never retried."""

    exit_code = EXIT_BAD_INPUT


def run_cli(main, argv=None, prog="genefarm"):
    """Run main(argv): InputError is reported on stderr (no traceback) with exit code 2."""
    try:
        rc = main(argv)
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc or 0)
