"""User-facing errors: the CLI prints these as one paragraph, without a traceback."""


class PrivdynError(Exception):
    """A problem the user can fix (bad config, missing file, stale run directory).

    The message must name the problem and the fix.
    """
