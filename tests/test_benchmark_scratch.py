"""The benchmarks' temporary folders (checkpoints and GGUF files, about a gigabyte a run) are
removed when a benchmark exits: runs had left 22 GB in the temporary folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_a_scratch_folder_is_gone_when_the_process_exits():
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from repository import scratch_dir; "
              "folder = scratch_dir(); (folder / 'model.safetensors').write_bytes(b'0' * 1024); print(folder)")
    out = subprocess.run([sys.executable, "-c", script, str(REPO / "benchmarks")], capture_output=True, text=True,
                         check=True)
    folder = Path(out.stdout.strip())
    assert folder.name.startswith("gpt-hub-bench-") and not folder.exists()


def test_no_benchmark_makes_a_folder_it_does_not_remove():
    for path in (REPO / "benchmarks").glob("*.py"):
        assert "mkdtemp(" not in path.read_text(encoding="utf-8"), f"{path.name} leaves a temporary folder behind"
