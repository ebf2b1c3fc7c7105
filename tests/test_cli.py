"""The command line: `python hubconf.py ...`."""

import math
import subprocess
import sys

import pytest
import torch
from conftest import REPO, need_shared_data, repo_module


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
    assert "'/nonexistent' is not a checkpoint name, a repository id or an existing path" in result.stderr
    result = run("example", "--model", "/nonexistent")
    assert result.returncode == 2 and "not a directory" in result.stderr and "Traceback" not in result.stderr
    result = run("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "example" in run("--help").stdout


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cli = repo_module("hubconfs.cli")
    return cli.build_example_checkpoint(tmp_path_factory.mktemp("gpt2-example"), need_shared_data() / "gpt2")


def in_process(checkpoint):
    return (repo_module("models").GPT2LMHeadModel.from_pretrained(checkpoint),
            repo_module("tokenizers").GPT2Tokenizer.from_pretrained(checkpoint))


def test_generate_streams_the_greedy_continuation(checkpoint):
    model, tokenizer = in_process(checkpoint)
    prompt = "The meaning of life is"
    ids = torch.tensor([tokenizer.encode(prompt)])
    expected = model.generate(ids, max_new_tokens=8, eos_token_id=tokenizer.eos_token_id)
    result = run("generate", "--model", str(checkpoint), "--prompt", prompt, "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout == prompt + tokenizer.decode(expected[0, ids.size(1):].tolist()) + "\n"
    piped = subprocess.run([sys.executable, str(REPO / "hubconf.py"), "generate", "--model", str(checkpoint),
                            "--prompt", "-", "--max-new-tokens", "8"], input=prompt, capture_output=True, text=True)
    assert piped.stdout == result.stdout


def test_generate_samples_reproducibly_and_several_sequences(checkpoint):
    args = ("generate", "--model", str(checkpoint), "--prompt", "Hello", "--max-new-tokens", "6",
            "--temperature", "0.9", "--top-k", "50", "--top-p", "0.95", "--seed", "3")
    first, second = run(*args), run(*args)
    assert first.returncode == 0 and first.stdout == second.stdout
    many = run(*args, "--num-return-sequences", "2", "--dtype", "bfloat16")
    assert many.returncode == 0, many.stderr
    assert "--- 1 ---" in many.stdout and "--- 2 ---" in many.stdout


def test_score_prints_the_sliding_window_perplexity(checkpoint, tmp_path):
    model, tokenizer = in_process(checkpoint)
    text = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 3
    (tmp_path / "text.txt").write_text(text)
    ids = torch.tensor([tokenizer.encode(text)])
    expected = math.exp(model(ids, labels=ids).loss.item())  # one window covers it all
    whole = run("score", "--model", str(checkpoint), str(tmp_path / "text.txt"))
    assert whole.returncode == 0, whole.stderr
    assert float(whole.stdout.split()[1]) == pytest.approx(expected, rel=1e-5)
    assert f"({ids.size(1) - 1} tokens scored, window 1024, stride 1024)" in whole.stdout
    windows = run("score", "--model", str(checkpoint), str(tmp_path / "text.txt"), "--max-length", "16", "--stride", "8")
    assert f"({ids.size(1) - 1} tokens scored, window 16, stride 8)" in windows.stdout
    bad = run("score", "--model", str(checkpoint), str(tmp_path / "text.txt"), "--stride", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--stride" in bad.stderr
