"""bcc's errors: each says what went wrong, where, and what to do next."""


class BccError(Exception):
    """Something failed (exit 1)."""
    exit_code = 1


class BadInput(BccError):
    """The user's input is wrong (exit 2): nothing was changed."""
    exit_code = 2


class Unavailable(BccError):
    """A provider or feature that is not available in this version (exit 1, loudly)."""
