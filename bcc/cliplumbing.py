"""What the two command lines share (bcc's and genefarm's, which imports it from here: bcc
stands apart, and the master may use its parts): exit codes, talk on stderr and data on stdout,
--json, and one way to end: a bad-input error exits 2, a failure 1, Ctrl-C 130.
"""
import json
import sys

EXIT_OK, EXIT_FAILED, EXIT_BAD, EXIT_INTERRUPTED = 0, 1, 2, 130


def talk(*a):
    """Words for a person: stderr."""
    print(*a, file=sys.stderr, flush=True)


def emit(args, data, text=None, dumps=None):
    """Data: JSON on stdout with --json, else the text (if any) on stdout."""
    if getattr(args, "json", False):
        print((dumps or (lambda d: json.dumps(d, indent=1, sort_keys=True, default=str)))(data), flush=True)
    elif text is not None:
        print(text, flush=True)


def run(fn, args, prog, bad=(), failed=(), error=""):
    """fn(args) -> exit code, with the errors every command ends on turned into their exit codes:
    `bad` exception types exit 2, `failed` ones 1, KeyboardInterrupt 130; each says one line
    ("PROG: ERROR{e}", error being e.g. "error: ")."""
    try:
        return fn(args)
    except KeyboardInterrupt:
        talk(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except tuple(bad) as e:
        talk(f"{prog}: {error}{e}")
        return EXIT_BAD
    except tuple(failed) as e:
        talk(f"{prog}: {error}{e}")
        return EXIT_FAILED
