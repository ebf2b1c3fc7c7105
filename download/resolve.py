"""Turn what a user passed (a directory, a file, a checkpoint name, a URL) into a local file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import urlparse

from .http import EntryNotFoundError, OfflineError, fetch
from .names import HUB_REPOS, PINNED_SHA256, endpoint, hub_url, original_release_url, repo_id


# The keywords of resolve_file that say where and how files are fetched; models, configs and
# tokenizers take them among their own keywords and hand them on.
DOWNLOAD_OPTIONS = ("cache_dir", "revision", "force_download", "local_files_only", "token", "progress")


def download_options(kwargs: dict) -> dict:
    """Take the download options out of ``kwargs`` (which keeps the rest)."""
    return {key: kwargs.pop(key) for key in DOWNLOAD_OPTIONS if key in kwargs}


class CheckpointNotFoundError(FileNotFoundError):
    """The name or path does not lead to the file that was asked for."""


def resolve_file(
    name_or_path: str | os.PathLike,
    filenames: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | None = None,
    progress: bool | None = None,
) -> str:
    """Return the local path of the first of ``filenames`` that ``name_or_path`` provides.

    ``name_or_path`` is a local directory, or a file there (which stands for its folder:
    ``config.json`` is found beside a weights file); a checkpoint name (``gpt2``) or hub repository
    id (``org/name``), fetched from ``{HF_ENDPOINT}/{repo}/resolve/{revision}/{file}``; an http(s)
    or ``s3://`` URL of a folder (ending in ``/``) or of one of its files. Downloads go through
    the cache (see ``download.http``).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a checkpoint name or a path, got {type(name_or_path).__name__}")
    path = os.fspath(name_or_path)
    if os.path.isfile(path) or os.path.isdir(path):
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        for name in filenames:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
        raise CheckpointNotFoundError(f"{path} provides no {' or '.join(filenames)}")

    options = dict(cache_dir=cache_dir, force_download=force_download, local_files_only=local_files_only,
                   progress=progress)
    path = original_release_url(path) or path  # OpenAI's own files: a folder URL
    if path.startswith(("http://", "https://", "s3://")):
        base, _, last = path.rpartition("/")
        candidates = [path] if last in filenames else [f"{base}/{name}" for name in filenames]
        return _first_available(path, candidates, lambda url: _fetch(url, token=token, **options))
    repo = repo_id(path)
    if repo is None:
        raise CheckpointNotFoundError(
            f"{path!r} is not a local file or directory, a checkpoint name ({', '.join(HUB_REPOS)}), "
            "a hub repository id (org/name) or a URL"
        )
    host = urlparse(endpoint()).hostname
    return _first_available(path, [hub_url(repo, name, revision) for name in filenames],
                            lambda url: _fetch(url, token=token, token_host=host,
                                               sha256=PINNED_SHA256.get((repo, url.rsplit("/", 1)[1])), **options))


def _fetch(url: str, **options) -> str:
    if url.startswith("s3://"):
        from .s3 import fetch_s3

        options.pop("token", None)  # S3 uses the AWS credential chain
        return str(fetch_s3(url, **options))
    return str(fetch(url, **options))


def _first_available(what: str, urls: list[str], get) -> str:
    """The first of ``urls`` that exists (a 404 or a miss in the offline cache tries the next)."""
    missing = []
    for url in urls:
        try:
            return get(url)
        except (EntryNotFoundError, OfflineError) as err:
            missing.append(str(err))
    raise CheckpointNotFoundError(f"{what}: " + "; ".join(missing))
