"""Bad input to fine-tuning never gives a stray traceback or a failure after the training
(issue 18): the output folder is checked before any step, a damaged or foreign checkpoint on
--resume is named, and so is a record nested too deeply. Each case is one row of
docs/bad-input.md."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import repo_module
from test_finetune import byte_level_checkpoint

GPTHubError = repo_module("errors").GPTHubError
cli = repo_module("cli.main")
training = repo_module("training")
models = repo_module("models")
tokenizers = repo_module("tokenizers")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, a training text, and a checkpoint of a one-step run that resumes cleanly."""
    root = tmp_path_factory.mktemp("finetune-inputs")
    (root / "train.txt").write_text(" ".join(["the cat sat on the mat"] * 200))
    base = byte_level_checkpoint(root / "base")
    args = ["finetune-lm", "--model", str(base), "--train", str(root / "train.txt"), "--output", str(root / "out"),
            "--batch-size", "2", "--block-size", "32", "--max-steps", "1"]
    assert cli.main(args) == 0
    return {"root": root, "base": base, "checkpoint": root / "out" / "checkpoint-1"}


def cli_args(run: dict, output: Path, *extra: str) -> list[str]:
    return ["finetune-lm", "--train", str(run["root"] / "train.txt"), "--output", str(output), "--batch-size", "2",
            "--block-size", "32", "--max-steps", "1", *extra]


def assert_usage_error(args: list[str], capsys, *says: str) -> None:
    """The command stops with status 2 and one line holding each of ``says``."""
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(s in err for s in says), err


def counting_task(model) -> tuple:
    """A language-modelling task on random blocks that counts its training steps."""
    steps = []

    def loss(engine, batch):
        steps.append(1)
        return engine(input_ids=batch["input_ids"], labels=batch["input_ids"], use_cache=False).loss

    rows = training.Rows({"input_ids": torch.randint(0, 256, (8, 16))})
    return training.Task(train=rows, eval=None, loss=loss, score=None, summarise=None), steps


@pytest.mark.parametrize("where", ["a-file", "under-a-file"])
def test_an_output_folder_that_cannot_be_made_is_refused_before_training(run, tmp_path, where):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    output = blocker if where == "a-file" else blocker / "out"
    model = models.GPT2LMHeadModel.from_pretrained(run["base"])
    task, steps = counting_task(model)
    with pytest.raises(ValueError, match=f"the output folder {output} (is a file|lies under)") as caught:
        training.train(model, task, training.Options(output_dir=str(output), batch_size=2, max_steps=2))
    assert isinstance(caught.value, GPTHubError) and isinstance(caught.value, RuntimeError)
    assert steps == []  # refused before the first step, not after the training


def test_the_command_refuses_an_output_file_before_loading(run, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    assert_usage_error(cli_args(run, blocker, "--model", str(tmp_path / "no-such-model")), capsys,
                       f"the output folder {blocker} is a file")


def damaged(run: dict, tmp_path: Path, name: str, content: bytes | None = None, state: object = None) -> Path:
    """A copy of the checkpoint with ``name`` replaced by ``content`` or by ``state`` saved with torch."""
    folder = shutil.copytree(run["checkpoint"], tmp_path / "checkpoint-1")
    if content is not None:
        (folder / name).write_bytes(content)
    else:
        torch.save(state, folder / name)
    return folder


def good_state(run: dict) -> dict:
    return torch.load(run["checkpoint"] / "trainer_state.pt", weights_only=True)


STATES = {  # id -> (file content or None, torch-saved state or None, what the error says)
    "state-random-bytes": (b"\x00garbage" * 100, None, "cannot be read"),
    "state-empty-file": (b"", None, "cannot be read"),
    "state-a-list": (None, [1, 2, 3], "holds a list"),
    "state-step-a-string": (None, "step", "'step' is str, expected int"),
    "state-no-optimizer": (None, "optimizer", "'optimizer' is NoneType, expected dict"),
    "state-short-rng": (None, "rng", "'rng' has the wrong length"),
    "state-foreign-optimizer": (None, "foreign", "does not fit this model and run"),
}


def state_for(run: dict, kind: object) -> object:
    state = good_state(run)
    if kind == "step":
        state["step"] = "1"
    elif kind == "optimizer":
        del state["optimizer"]
    elif kind == "rng":
        state["rng"] = []
    elif kind == "foreign":  # an optimizer state of another model: its parameter groups differ
        state["optimizer"] = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))]).state_dict()
    else:
        return kind
    return state


@pytest.mark.parametrize("case", STATES)
def test_a_damaged_trainer_state_is_named(run, tmp_path, capsys, case):
    content, kind, says = STATES[case]
    folder = damaged(run, tmp_path, "trainer_state.pt", content, None if content is not None else state_for(run, kind))
    assert_usage_error(cli_args(run, tmp_path / "out", "--resume", str(folder)), capsys,
                       str(folder / "trainer_state.pt"), says)


@pytest.mark.parametrize("content, says", [(b"{broken", "cannot be read as a model config"),
                                           (b"[1, 2]", "holds a JSON list"),
                                           (b"[" * 100_000, "cannot be read as a model config")],
                         ids=["config-not-json", "config-a-list", "config-nested-deep"])
def test_a_broken_config_in_the_resumed_folder_is_named(run, tmp_path, capsys, content, says):
    folder = damaged(run, tmp_path, "config.json", content)
    assert_usage_error(cli_args(run, tmp_path / "out", "--resume", str(folder)), capsys,
                       str(folder / "config.json"), says)


def test_a_record_nested_too_deeply_is_named(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"context": "x", "choices": ["a", "b"], "label": 0}\n' + "[" * 100_000 + "\n")
    with pytest.raises(ValueError, match=f"{path}, line 2: not JSON \\(nested too deeply\\)") as caught:
        training.read_choices(path)
    assert isinstance(caught.value, GPTHubError)


def test_training_errors_are_the_librarys():
    assert issubclass(training.DataError, GPTHubError) and issubclass(training.DataError, ValueError)
    assert issubclass(training.TrainingError, GPTHubError) and issubclass(training.TrainingError, RuntimeError)
