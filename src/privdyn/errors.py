"""User-facing errors: the CLI prints these as one paragraph, without a traceback."""


class PrivdynError(Exception):
    """A problem the user can fix (bad config, missing file, stale run directory).

    The message must name the problem and the fix.
    """


class DataError(PrivdynError, ValueError):
    """What the core (attacks, analysis) raises: the data it was given cannot be used. The
    message describes the data; the pipeline adds where it came from and what to run."""
