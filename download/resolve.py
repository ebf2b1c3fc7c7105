"""Turn what a user passed (a directory, a file, later a checkpoint name or URL) into a local file."""

from __future__ import annotations

import os
from collections.abc import Sequence


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

    ``name_or_path`` is a directory holding the file, or a file, which stands for its folder
    (``config.json`` is found beside a weights file).
    """
    del cache_dir, revision, force_download, local_files_only, token, progress  # for named checkpoints
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a checkpoint name or a path, got {type(name_or_path).__name__}")
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
    elif os.path.isdir(path):
        folder = path
    else:
        raise CheckpointNotFoundError(
            f"{path!r} is not a local file or directory, and downloading checkpoints by name or URL "
            "is not available in this version; pass a directory holding config.json and "
            "model.safetensors (or pytorch_model.bin)"
        )
    for name in filenames:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise CheckpointNotFoundError(f"{path} provides no {' or '.join(filenames)}")
