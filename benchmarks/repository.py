"""The repository as torch.hub loads it (its private package), for the benchmark scripts."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def repo_module(name: str):
    """A module of this repository by its path inside it (``models``, ``models.matmul``)."""
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    return importlib.import_module(f"{hub._PACKAGE}.{name}")
