"""The repository as torch.hub loads it (its private package), for the benchmark scripts."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def repo_module(name: str, root: Path = REPO):
    """A module of this repository (or of another checkout of it, at ``root``) by its path inside
    it (``models``, ``models.kernels``). Each checkout gets its own private package, so two can be
    loaded side by side in one process."""
    spec = importlib.util.spec_from_file_location("hubconf", Path(root) / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    return importlib.import_module(f"{hub._PACKAGE}.{name}")
