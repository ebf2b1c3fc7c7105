"""The one layer through which models and tokenizers find their files: local paths, checkpoint
names and hub repositories (``HF_ENDPOINT``, cached in Hugging Face's own layout), http(s) URLs
and ``s3://`` (cached under ``torch.hub.get_dir()``), downloaded once into caches that never
hold a half-written or unverified file. See docs/downloads.md."""

from .atomic import atomic_path, atomic_write, atomic_writer
from .cache import CacheCorruptedError, default_cache_dir
from .hf_cache import hub_cache_dir
from .http import DownloadError, EntryNotFoundError, OfflineError, UnreachableError
from .names import HUB_REPOS, InvalidNameError, hub_url
from .resolve import DOWNLOAD_OPTIONS, CheckpointNotFoundError, download_options, resolve_file
from .transfer import DiskFullError

__all__ = ["atomic_path", "atomic_write", "atomic_writer", "CacheCorruptedError", "CheckpointNotFoundError",
           "DOWNLOAD_OPTIONS", "DiskFullError", "DownloadError", "EntryNotFoundError", "HUB_REPOS", "InvalidNameError",
           "OfflineError", "UnreachableError", "default_cache_dir", "download_options", "hub_cache_dir", "hub_url",
           "resolve_file"]
