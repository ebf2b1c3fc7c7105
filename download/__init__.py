"""The one layer through which models and tokenizers find their files: local paths, checkpoint
names and hub repositories (``HF_ENDPOINT``), http(s) URLs and ``s3://``, downloaded once into a
cache that never holds a half-written or unverified file."""

from .atomic import atomic_path, atomic_write, atomic_writer
from .cache import CacheCorruptedError, default_cache_dir
from .http import DownloadError, EntryNotFoundError, OfflineError
from .names import HUB_REPOS, InvalidNameError, hub_url
from .resolve import DOWNLOAD_OPTIONS, CheckpointNotFoundError, download_options, resolve_file

__all__ = ["atomic_path", "atomic_write", "atomic_writer", "CacheCorruptedError", "CheckpointNotFoundError", "DOWNLOAD_OPTIONS", "DownloadError",
           "EntryNotFoundError", "HUB_REPOS", "InvalidNameError", "OfflineError", "default_cache_dir", "download_options", "hub_url",
           "resolve_file"]
