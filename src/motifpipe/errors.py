"""User-facing errors.

A :class:`MotifpipeError` is a mistake in the user's input (config, file, value).
The CLI prints it as one line and exits non-zero without a traceback; any other
exception is a bug and keeps its traceback.
"""


class MotifpipeError(Exception):
    """A user error: the message names the offending key, file or value."""


class TrainingDiverged(MotifpipeError):
    """The loss became NaN or infinite during training."""
