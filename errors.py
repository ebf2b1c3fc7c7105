"""The one base class of the errors this library raises on purpose.

Each error is also the built-in type that fits it (``ValueError`` for a bad value or file,
``TypeError`` for a wrong type, ``OSError`` for a download or the disk), so code that catches
those keeps working, and ``except GPTHubError`` catches everything this library reports.
"""


class GPTHubError(Exception):
    """A bad argument, a bad file or a failed download, reported by this library."""
