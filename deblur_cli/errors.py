"""The one user-facing error type: the CLI prints its message on one line and exits non-zero."""

from __future__ import annotations


class DeblurError(Exception):
    """A problem the user can fix (bad input, missing file, unknown model, ...).

    Attributes:
        exit_code: process exit status the CLI uses for this error.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
