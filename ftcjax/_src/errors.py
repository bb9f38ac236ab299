"""The one error type ftcjax raises for bad input."""


class FTCInputError(ValueError):
    """Bad user input: the message names the argument (or spec field) and the bad value.

    A subclass of ``ValueError`` so callers that already catch ``ValueError`` keep working;
    the CLI catches it and exits with status 2 without a traceback.
    """


class FTCEnvironmentError(RuntimeError):
    """The machine or the file system failed us, not the input: a full disk, a read-only or damaged
    run directory, a planted link, a distributed peer that died, not enough memory.

    The CLI prints its one-line message and exits with status 3 (bad input stays status 2). The message
    says what was already saved and how to go on.
    """
