"""The one exception type that reaches users as a single sentence instead of a traceback."""


class FamrError(Exception):
    """A problem the user can fix (bad config value, missing data, unreadable checkpoint).

    The message must be one sentence that names the fix; the CLI prints it and exits non-zero.
    """


class DivergedError(FamrError):
    """Training or unlearning produced a non-finite loss or parameter; results.json says "diverged"."""


class RunInterrupted(BaseException):
    """SIGTERM, raised in the main thread like SIGINT's KeyboardInterrupt so every ``finally`` runs.

    A BaseException, as KeyboardInterrupt is, so no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum
