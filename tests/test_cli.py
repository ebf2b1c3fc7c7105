"""The command line: `python hubconf.py ...`."""

import subprocess
import sys

from conftest import REPO, need_shared_data


def run(*args):
    return subprocess.run([sys.executable, str(REPO / "hubconf.py"), *args], capture_output=True, text=True,
                          cwd=REPO.parent)


def test_example_runs_the_hub_page_on_a_local_checkpoint():
    result = run("example", "--vocab", str(need_shared_data() / "gpt2"))
    assert result.returncode == 0, result.stderr
    assert "'Who', 'Ġwas', 'ĠJim', 'ĠH', 'enson'" in result.stdout
    assert "gpt2DoubleHeadsModel choice logits" in result.stdout


def test_bad_arguments_give_one_line_errors():
    result = run("example", "--vocab", "/nonexistent")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "--vocab /nonexistent holds no vocab.json" in result.stderr
    result = run("example", "--model", "/nonexistent")
    assert result.returncode == 2 and "not a directory" in result.stderr and "Traceback" not in result.stderr
    result = run("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "example" in run("--help").stdout
