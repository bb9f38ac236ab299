"""The one error type ftcjax raises for bad input."""


class FTCInputError(ValueError):
    """Bad user input: the message names the argument (or spec field) and the bad value.

    A subclass of ``ValueError`` so callers that already catch ``ValueError`` keep working;
    the CLI catches it and exits with status 2 without a traceback.
    """
