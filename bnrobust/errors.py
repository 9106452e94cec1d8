"""The one exception type the CLI turns into a one-line error message."""


class BnrobustError(Exception):
    """A user-facing error: bad input, missing data, bad config. Printed as one line."""
