"""The one exception type the core raises for anything a user can act on."""

from __future__ import annotations


class DenoiserError(Exception):
    """A problem reported to the user as one line.

    ``exit_code`` is what the CLI exits with: 2 for usage / input problems (bad file, missing passes,
    bad model file), 1 for internal failures (the model misbehaved, a bug).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class Terminated(BaseException):
    """Raised in the main thread when a termination signal arrives (SIGTERM: a render farm cancelling a
    job), so that cleanup (temporary files, claims) runs as it does for Ctrl+C's KeyboardInterrupt.

    A BaseException like KeyboardInterrupt, so ``except Exception`` blocks do not swallow it.
    """

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number
