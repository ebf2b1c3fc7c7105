"""The command line: `python hubconf.py ...`, run as users run it (a subprocess), except where a
failure has to be planted."""

import argparse
import math
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO, models, need_shared_data, predicting_checkpoint, repo_module

main_module = repo_module("cli.main")


def run(*args, cwd=None, **kwargs):
    return subprocess.run([sys.executable, str(REPO / "hubconf.py"), *args], capture_output=True, text=True,
                          cwd=cwd or REPO.parent, **kwargs)


def run_here(capsys, *args):
    """``run``, in this process: for usage errors, where a process start (about 2 s) buys nothing."""
    try:
        status = main_module.main(list(args))
    except SystemExit as exit:  # argparse's errors
        status = exit.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


def one_line_error(result, status: int) -> None:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    example = repo_module("cli.example")
    return example.build_example_checkpoint(tmp_path_factory.mktemp("gpt2-example"), "gpt2", need_shared_data() / "gpt2")


def in_process(checkpoint):
    return (models.GPT2LMHeadModel.from_pretrained(checkpoint),
            repo_module("tokenizers").GPT2Tokenizer.from_pretrained(checkpoint))


# -- example -------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, prefix", [("gpt2", "gpt2"), ("openai-gpt", "openAIGPT")])
def test_example_runs_offline_in_a_clone_with_nothing_beside_it(tmp_path, family, prefix):
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(".git", "__pycache__", "tests", "benchmarks"))
    result = subprocess.run([sys.executable, str(clone / "hubconf.py"), "example", "--family", family],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{prefix}LMHeadModel next token" in result.stdout and f"{prefix}DoubleHeadsModel choice logits" in result.stdout
    assert not (tmp_path / "shared").exists()


def test_example_on_a_gpt1_checkpoint_folder(tmp_path):
    folder = repo_module("cli.example").build_example_checkpoint(tmp_path / "gpt", "openai-gpt",
                                                                 need_shared_data() / "openai-gpt")
    result = run("example", "--model", str(folder))
    assert result.returncode == 0, result.stderr
    assert "'who</w>', 'was</w>', 'jim</w>', 'hen', 'son</w>'" in result.stdout
    assert "openAIGPTDoubleHeadsModel choice logits" in result.stdout


def test_example_with_the_real_gpt2_vocabulary():
    result = run("example", "--vocab", str(need_shared_data() / "gpt2"))
    assert result.returncode == 0, result.stderr
    assert "'Who', 'Ġwas', 'ĠJim', 'ĠH', 'enson'" in result.stdout


# -- arguments -----------------------------------------------------------------------------------

def test_help_and_usage_errors_never_import_torch():
    script = (f"import runpy, sys\nfor argv in {HELP_ARGVS!r}:\n    sys.argv = ['hubconf.py', *argv]\n"
              f"    try:\n        runpy.run_path({str(REPO / 'hubconf.py')!r}, run_name='__main__')\n"
              "    except SystemExit:\n        pass\nprint('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.splitlines()[-1] == "False", result.stderr
    assert "generate" in result.stdout and "--max-new-tokens" in result.stdout


HELP_ARGVS = [["--help"], ["generate", "--help"], ["score", "--help"], ["example", "--help"], ["finetune-lm", "--help"],
              ["generate", "--model", "gpt2", "--prompt", "x", "--temperature", "-1"]]


def test_every_option_has_help_that_shows_its_default():
    parser = repo_module("cli.options").parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            if action.option_strings and not action.required:
                assert "default" in command.formatter_class(name)._get_help_string(action), (name, action.dest)
    assert "(default: 50)" in " ".join(commands.choices["generate"].format_help().split())


BAD = [("generate", "--max-new-tokens", "0"), ("generate", "--max-new-tokens", "-1"), ("generate", "--temperature", "-1"),
       ("generate", "--top-p", "0"), ("generate", "--top-p", "1.5"), ("generate", "--top-k", "-1"),
       ("generate", "--repetition-penalty", "0"), ("generate", "--num-return-sequences", "0"),
       ("generate", "--temperature", "nan"), ("score", "--max-length", "1"), ("score", "--stride", "0"),
       ("score", "--max-length", "8", "--stride", "9"), ("generate", "--seed", "-1"),
       ("generate", "--seed", "18446744073709551616"), ("generate", "--quantize", "int8", "--dtype", "float16"),
       ("score", "--quantize", "int4", "--dtype", "float16"), ("generate", "--num-return-sequences", "2")]


@pytest.mark.parametrize("bad", BAD, ids=" ".join)
def test_bad_options_fail_in_one_line_before_anything_is_printed(checkpoint, tmp_path, bad):
    command, *option = bad
    (tmp_path / "text.txt").write_text("Some text to score, long enough to have a few tokens.")
    where = ["--prompt", "Hi"] if command == "generate" else [str(tmp_path / "text.txt")]
    result = run(command, "--model", str(checkpoint), *where, *option)
    one_line_error(result, 2)
    assert result.stdout == "" and option[0] in result.stderr


def test_other_usage_errors(tmp_path, capsys):
    one_line_error(run_here(capsys, "example", "--vocab", "/nonexistent"), 2)
    one_line_error(run_here(capsys, "example", "--model", "/nonexistent"), 2)
    one_line_error(run("frobnicate"), 2)
    one_line_error(run_here(capsys, "generate", "--model", "gpt2"), 2)  # no --prompt
    waiting = subprocess.Popen([sys.executable, str(REPO / "hubconf.py"), "generate", "--model", "gpt2", "--prompt", "-",
                                "--device", "cuda0"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # the prompt's stdin stays open: the bad device is named without waiting for it
        assert waiting.wait(timeout=60) == 2 and "--device='cuda0' is not a device" in waiting.stderr.read()
    finally:
        waiting.kill()
        waiting.stdin.close()
        waiting.stderr.close()
    bad_device = run_here(capsys, "generate", "--model", "gpt2", "--prompt", "Hi", "--device", "gpu")
    one_line_error(bad_device, 2)
    assert "--device='gpu' is not a device" in bad_device.stderr
    quantized = run_here(capsys, "generate", "--model", "gpt2", "--prompt", "Hi", "--quantize", "int8", "--device", "cuda")
    one_line_error(quantized, 2)
    assert "quantize='int8' is for the CPU; --device='cuda' asks for cuda" in quantized.stderr


@pytest.mark.parametrize("command", ["finetune-lm", "finetune-mc"])
def test_unreadable_training_files_are_refused_before_the_model_loads(tmp_path, command, capsys):
    """A mistyped --train was found only after the model had loaded (with a name, after a download)."""
    (tmp_path / "train.txt").write_text("text")
    for bad in (["--train", str(tmp_path / "typo.txt")], ["--train", str(tmp_path / "train.txt"), "--eval", str(tmp_path)]):
        result = run_here(capsys, command, "--model", "gpt2", *bad, "--output", str(tmp_path / "out"))  # no download tried
        one_line_error(result, 2)
        assert "cannot read" in result.stderr and bad[-1] in result.stderr
        assert not (tmp_path / "out").exists()


def test_a_prompt_that_is_not_utf8_is_a_usage_error():
    """Bytes that are not UTF-8 on stdin (or in argv) reached the tokenizer as lone surrogates: exit
    status 1 and a message about surrogateescape."""
    piped = subprocess.run([sys.executable, str(REPO / "hubconf.py"), "generate", "--model", "gpt2", "--prompt", "-"],
                           input=b"\xff\xfe", capture_output=True, cwd=REPO.parent)
    assert piped.returncode == 2 and piped.stderr.decode().startswith("error: the prompt is not UTF-8 text")
    argv = run("generate", "--model", "gpt2", "--prompt", "ab\udcff")  # how Python hands argv's byte 0xff over
    one_line_error(argv, 2)
    assert "not UTF-8 text (an undecodable byte at character 2)" in argv.stderr


def test_openai_releases_are_read_by_their_files_not_a_config(tmp_path):
    """OpenAI's own releases have no config.json: the CLI refused what torch.hub.load takes."""
    family_of = repo_module("cli.loading").family_of
    fixtures = REPO / "tests" / "fixtures" / "openai"
    assert family_of(str(fixtures / "gpt2")) == "gpt2" and family_of(str(fixtures / "gpt1")) == "openai-gpt"
    assert family_of("openai/124M") == "gpt2" and family_of("openai-gpt-original") == "openai-gpt"  # no download
    result = run("score", "--model", str(fixtures / "gpt2"), str(REPO / "README.md"))
    one_line_error(result, 1)
    assert "provides no vocab.json or encoder.json" in result.stderr  # past the family: the tokenizer's files


# -- failures ------------------------------------------------------------------------------------

def test_a_failed_run_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "missing-checkpoint"
    missing.mkdir()
    one_line_error(run("generate", "--model", str(missing), "--prompt", "Hi"), 1)
    debug = run_here(capsys, "generate", "--model", str(missing), "--prompt", "Hi", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    usage = run_here(capsys, "generate", "--model", "gpt2", "--prompt", "Hi", "--device", "gpu", "--debug")
    assert usage.returncode == 2 and "Traceback" in usage.stderr  # --debug changed a usage error's status to 1


@pytest.mark.parametrize("failure", [RecursionError("maximum recursion depth exceeded"), TypeError("bad type"),
                                     RuntimeError("boom"), KeyError("k"), MemoryError()])
def test_any_exception_is_one_line_and_exit_status_1(monkeypatch, capsys, failure):
    def fail(args):
        raise failure

    monkeypatch.setattr(main_module, "run", fail)
    assert main_module.main(["score", "--model", "m", "f.txt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and type(failure).__name__ in err
    assert main_module.main(["score", "--model", "m", "f.txt", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_keyboard_interrupt_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(main_module, "run", interrupted)
    assert main_module.main(["score", "--model", "m", "f.txt"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_ctrl_c_during_generate(tmp_path):
    data = need_shared_data() / "gpt2"
    config = models.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=1024)
    slow = predicting_checkpoint(tmp_path / "gpt2", models.GPT2LMHeadModel, config, 262, data)  # " the", forever
    process = subprocess.Popen([sys.executable, str(REPO / "hubconf.py"), "generate", "--model", str(slow), "--prompt",
                                "Once", "--max-new-tokens", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(len("Once the")) == b"Once the"  # generating now
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert b"Traceback" not in err and b"interrupted" in err


# -- generate and score --------------------------------------------------------------------------

def test_generate_streams_the_greedy_continuation(checkpoint, capsys):
    model, tokenizer = in_process(checkpoint)
    prompt = "The meaning of life is"
    ids = torch.tensor([tokenizer.encode(prompt)])
    expected = model.generate(ids, max_new_tokens=8, eos_token_id=tokenizer.eos_token_id)
    result = run("generate", "--model", str(checkpoint), "--prompt", prompt, "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout == prompt + tokenizer.decode(expected[0, ids.size(1):].tolist()) + "\n"
    piped = run("generate", "--model", str(checkpoint), "--prompt", "-", "--max-new-tokens", "8", input=prompt)
    assert piped.stdout == result.stdout
    zero = run_here(capsys, "generate", "--model", str(checkpoint), "--prompt", prompt, "--max-new-tokens", "8",
                    "--temperature", "0", "--top-k", "5", "--seed", "1", "--device", "cpu")  # greedy, whatever else is asked
    assert zero.stdout == result.stdout, zero.stderr


def test_generate_streams_gpt1_text_as_decode_gives_it(tmp_path):
    data = need_shared_data() / "openai-gpt"
    tokenizer = repo_module("tokenizers").OpenAIGPTTokenizer.from_pretrained(data)
    config = models.OpenAIGPTConfig(n_layer=2, n_embd=32, n_head=4)
    checkpoint = predicting_checkpoint(tmp_path / "gpt", models.OpenAIGPTLMHeadModel, config,
                                       tokenizer.convert_tokens_to_ids("is</w>"), data)
    result = run("generate", "--model", str(checkpoint), "--prompt", "The meaning of life is", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The meaning of life is is is is is\n"


def test_generate_samples_reproducibly_and_several_sequences(checkpoint, capsys):
    args = ("generate", "--model", str(checkpoint), "--prompt", "Hello", "--max-new-tokens", "6",
            "--temperature", "0.9", "--top-k", "50", "--top-p", "0.95", "--seed", "3")
    first, second = run(*args), run_here(capsys, *args)  # another process, the same text
    assert first.returncode == 0 and first.stdout == second.stdout
    many = run_here(capsys, *args, "--num-return-sequences", "2", "--dtype", "bfloat16")
    assert many.returncode == 0, many.stderr
    assert "--- 1 ---" in many.stdout and "--- 2 ---" in many.stdout


def test_score_prints_the_sliding_window_perplexity(checkpoint, tmp_path, capsys):
    model, tokenizer = in_process(checkpoint)
    text = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 3
    (tmp_path / "text.txt").write_text(text)
    ids = torch.tensor([tokenizer.encode(text)])
    expected = math.exp(model(ids, labels=ids).loss.item())  # one window covers it all
    whole = run("score", "--model", str(checkpoint), str(tmp_path / "text.txt"))
    assert whole.returncode == 0, whole.stderr
    assert float(whole.stdout.split()[1]) == pytest.approx(expected, rel=1e-5)
    assert f"({ids.size(1) - 1} tokens scored, window 1024, stride 1024)" in whole.stdout
    windows = run_here(capsys, "score", "--model", str(checkpoint), str(tmp_path / "text.txt"), "--max-length", "16",
                       "--stride", "8")
    assert f"({ids.size(1) - 1} tokens scored, window 16, stride 8)" in windows.stdout
    auto = run_here(capsys, "score", "--model", str(checkpoint), str(tmp_path / "text.txt"), "--device", "auto")  # a GPU if any
    assert auto.returncode == 0 and float(auto.stdout.split()[1]) == pytest.approx(expected, rel=1e-4), auto.stderr
    two = run_here(capsys, "score", "--model", str(checkpoint), str(tmp_path / "text.txt"), "--max-length", "2")
    assert two.returncode == 0 and f"({ids.size(1) - 1} tokens scored, window 2, stride 2)" in two.stdout
