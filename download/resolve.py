"""Turn what a user passed (a directory, a file, a checkpoint name, a URL) into a local file."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from ..errors import ArgumentTypeError, GPTHubError, is_flag
from .fetch import fetch_hub, fetch_url
from .http import EntryNotFoundError, OfflineError
from .names import HUB_REPOS, ORIGINAL_RELEASES, PINNED_SHA256, hub_url, original_release_url, repo_id

logger = logging.getLogger(__name__)


# The keywords of resolve_file that say where and how files are fetched; models, configs and
# tokenizers take them among their own keywords and hand them on.
DOWNLOAD_OPTIONS = ("cache_dir", "revision", "force_download", "local_files_only", "token", "progress")


def download_options(kwargs: dict) -> dict:
    """Take the download options out of ``kwargs`` (which keeps the rest)."""
    return {key: kwargs.pop(key) for key in DOWNLOAD_OPTIONS if key in kwargs}


class CheckpointNotFoundError(GPTHubError, FileNotFoundError):
    """The name or path does not lead to the file that was asked for."""


def resolve_file(
    name_or_path: str | os.PathLike,
    filenames: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    progress: bool | None = None,
) -> str:
    """Return the local path of the first of ``filenames`` that ``name_or_path`` provides.

    ``name_or_path`` is a local directory, or a file there (which stands for its folder:
    ``config.json`` is found beside a weights file); a checkpoint name (``gpt2``) or hub repository
    id (``org/name``), fetched from ``{HF_ENDPOINT}/{repo}/resolve/{revision}/{file}``; an http(s)
    or ``s3://`` URL of a folder (ending in ``/``) or of one of its files. Downloads go through
    the caches (see ``download.fetch``).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a checkpoint name or a path, got {type(name_or_path).__name__}")
    _check_types(cache_dir=(cache_dir, (str, os.PathLike, type(None))), revision=(revision, (str, type(None))),
                 force_download=(force_download, bool), local_files_only=(local_files_only, bool),
                 token=(token, (str, bool, type(None))), progress=(progress, (bool, type(None))))
    path = os.fspath(name_or_path)
    folder = _local_folder(path, filenames)
    if folder is not None:
        for name in filenames:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
        raise CheckpointNotFoundError(f"{path} provides no {' or '.join(filenames)}")

    options = dict(cache_dir=cache_dir, force_download=force_download, local_files_only=local_files_only,
                   token=token, progress=progress)
    path = original_release_url(path) or path  # OpenAI's own files: a folder URL
    if path.startswith(("http://", "https://", "s3://")):
        base, _, last = path.rpartition("/")
        candidates = [path] if last in filenames else [f"{base}/{name}" for name in filenames]
        return _first_available(path, candidates, lambda url: _fetch(url, **options))
    repo = repo_id(path)
    if repo is None:
        raise CheckpointNotFoundError(
            f"{path!r} is not a local file or directory, a checkpoint name ({', '.join(HUB_REPOS)}), "
            "a hub repository id (org/name) or a URL"
        )
    hub_url(repo, filenames[0], revision)  # refuses a crafted revision before anything else
    return _first_available(path, filenames, lambda name: str(fetch_hub(repo, name, revision=revision, **options)))


def _check_types(**options: tuple[object, type | tuple[type, ...]]) -> None:
    """Refuse, by name, a download option of the wrong type (``revision=5``), which would fail
    later in a message that names nothing."""
    for name, (value, kinds) in options.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if bool in kinds and is_flag(value):  # a NumPy bool, 0 or 1 too
            continue
        if not isinstance(value, kinds):
            wanted = " or ".join("None" if kind is type(None) else kind.__name__ for kind in kinds)
            raise ArgumentTypeError(f"{name} must be {wanted}, got {type(value).__name__}")


def _local_folder(path: str, filenames: Sequence[str]) -> str | None:
    """The local folder ``path`` stands for, or None when it is a name to fetch.

    As in Hugging Face's loaders, a local directory wins over a checkpoint name or repository id
    of the same name (said in the log); a regular file stands for its folder, except a stray file
    whose path is a name (``./gpt2``) and not one of the files asked for: it never hides the name.
    """
    if os.path.isdir(path):
        if _is_name(path):
            logger.info("using the local directory %s, not the hub checkpoint of that name", os.path.abspath(path))
        return path
    if not os.path.isfile(path):
        return None
    if _is_name(path) and os.path.basename(path) not in filenames:
        logger.warning("ignoring the file %s: %r is read as a checkpoint name (a directory of that name "
                       "would be used instead)", os.path.abspath(path), path)
        return None
    return os.path.dirname(os.path.abspath(path))


def _is_name(path: str) -> bool:
    """Whether ``path`` is also a checkpoint name or a repository id (``org/name``, no file suffix)."""
    if path in HUB_REPOS or path in ORIGINAL_RELEASES:
        return True
    try:
        return repo_id(path) is not None and "." not in path.rsplit("/", 1)[-1]
    except ValueError:
        return False


def _fetch(url: str, **options) -> str:
    if url.startswith("s3://"):
        from .s3 import fetch_s3

        options.pop("token", None)  # S3 uses the AWS credential chain
        return str(fetch_s3(url, **options))
    return str(fetch_url(url, sha256=PINNED_SHA256.get(url), **options))


def _first_available(what: str, candidates: Sequence[str], get) -> str:
    """The first of ``candidates`` (URLs or file names) that exists; one that is missing (a 404,
    an absence the cache recorded, a miss in the cache while offline) tries the next."""
    missing = []
    for candidate in candidates:
        try:
            return get(candidate)
        except (EntryNotFoundError, OfflineError) as err:
            missing.append(str(err))
    raise CheckpointNotFoundError(f"{what}: " + "; ".join(missing))
