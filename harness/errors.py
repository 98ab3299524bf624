"""Errors a user can fix. The CLI prints their message, without a traceback, and exits with `exit_code`."""


class FssbenchError(Exception):
    exit_code = 1


class UsageError(FssbenchError):
    """A flag, a name, a spec file or a weights path that is wrong: fix the command line or the file."""

    exit_code = 2


class DataError(FssbenchError):
    """The dataset on disk is missing, incomplete or unreadable."""


class PredictionError(FssbenchError):
    """An adapter returned something that cannot be scored."""
