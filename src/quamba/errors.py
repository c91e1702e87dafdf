"""The one exception type users see.

Every problem a user can cause (a wrong path, a corrupt file, an unsupported
config, too little calibration text) raises :class:`QuambaError` with a
one-line message that names the file, layer or field at fault. The CLI prints
the message without a traceback.
"""

__all__ = ["QuambaError"]


class QuambaError(Exception):
    """A user-facing error with a one-line, actionable message."""
