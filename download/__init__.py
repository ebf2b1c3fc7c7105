"""The one layer through which models and tokenizers find their files.

Today it serves local directories and files; checkpoint names and URLs are resolved by the
download-and-cache layer of its own issue.
"""

from .atomic import atomic_write, atomic_writer
from .resolve import CheckpointNotFoundError, resolve_file

__all__ = ["atomic_write", "atomic_writer", "CheckpointNotFoundError", "resolve_file"]
