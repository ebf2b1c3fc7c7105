"""Fine-tuning (training/): language modelling and multiple choice, single process and a 2-process
gloo run under torchrun, and resuming from a checkpoint."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, models, need_shared_data, repo_module, require

cli = repo_module("cli.main")
bpe = repo_module("tokenizers.bpe")
checkpoint_io = repo_module("models.checkpoint")
training = repo_module("training")
loop = repo_module("training.loop")

WORDS = "the cat sat on a mat and dog ran to big red ball".split()


def byte_level_checkpoint(folder: Path, dropout: float = 0.1) -> Path:
    """A tiny GPT-2 whose vocabulary is the 256 bytes plus <|endoftext|> (no merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {char: byte for byte, char in bpe.bytes_to_unicode().items()}
    vocab["<|endoftext|>"] = 256
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = models.GPT2Config(vocab_size=257, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=256,
                               eos_token_id=256, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                               summary_first_dropout=dropout)
    torch.manual_seed(0)
    models.GPT2LMHeadModel.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(160)]
    (root / "train.txt").write_text("\n".join(lines[:140]))
    (root / "eval.txt").write_text("\n".join(lines[140:]))
    records = []
    for i in range(48):
        context = " ".join(rng.choice(WORDS) for _ in range(6))
        right, wrong = "so it was good", "so it was bad"
        records.append({"context": context, "choices": [right, wrong] if i % 2 else [wrong, right], "label": i % 2})
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records[:32]))
    (root / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in records[32:]))
    return {"root": root, "base": byte_level_checkpoint(root / "base"),
            "base_no_dropout": byte_level_checkpoint(root / "base-no-dropout", dropout=0.0)}


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return checkpoint_io.load_weights(folder / "model.safetensors")


def finetune(command: str, base: Path, data: dict, output: Path, *extra: str) -> None:
    train, evaluate = ("train.txt", "eval.txt") if command == "finetune-lm" else ("train.jsonl", "eval.jsonl")
    args = [command, "--model", str(base), "--train", str(data["root"] / train), "--eval", str(data["root"] / evaluate),
            "--output", str(output), *extra]
    assert cli.main(args) == 0


def test_language_model_fine_tuning_lowers_perplexity(data, tmp_path):
    out = tmp_path / "lm"
    finetune("finetune-lm", data["base"], data, out, "--epochs", "2", "--batch-size", "4", "--lr", "3e-3",
             "--block-size", "64", "--grad-accum", "2")
    history = metrics(out)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[-1]["perplexity"] < 0.4 * history[0]["perplexity"]  # 257-way random: ~257 at the start
    assert history[2]["train_loss"] < history[1]["train_loss"]
    ends = [h["step"] for h in history[1:]]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == sorted(f"checkpoint-{s}" for s in ends)
    tuned = models.GPT2LMHeadModel.from_pretrained(out)
    assert torch.equal(tuned.lm_head.weight, weights(out / f"checkpoint-{ends[-1]}")["transformer.wte.weight"])


def test_multiple_choice_fine_tuning_learns_and_adds_the_paper_tokens(data, tmp_path):
    out = tmp_path / "mc"
    finetune("finetune-mc", data["base"], data, out, "--epochs", "12", "--batch-size", "8", "--lr", "3e-3",
             "--max-length", "40")
    history = metrics(out)
    assert history[-1]["mc_loss"] < 0.5 * history[0]["mc_loss"]
    assert history[-1]["accuracy"] == 1.0
    tuned = models.GPT2DoubleHeadsModel.from_pretrained(out)
    tokenizer = repo_module("tokenizers").GPT2Tokenizer.from_pretrained(out)
    assert tuned.config.vocab_size == len(tokenizer) == 260
    assert tokenizer.convert_tokens_to_ids(list(training.MC_TOKENS)) == [257, 258, 259]


def test_the_input_transformation_is_the_papers(data):
    tokenizer = repo_module("tokenizers").GPT2Tokenizer.from_pretrained(data["base"])
    model = models.GPT2DoubleHeadsModel.from_pretrained(data["base"])
    special = training.add_choice_tokens(tokenizer, model)
    record = training.read_choices(data["root"] / "eval.jsonl")[0]
    encoded = training.encode_choices([record], tokenizer, special, max_length=24)
    first = encoded["input_ids"][0, 0].tolist()
    context, ending = tokenizer.encode(record.context), tokenizer.encode(record.choices[0])
    room = 24 - len(ending) - 3  # a context too long loses its beginning
    assert first[: 3 + room + len(ending)] == [special[0], *context[-room:], special[1], *ending, special[2]]
    assert encoded["mc_token_ids"][0, 0] == 2 + room + len(ending)
    assert encoded["mc_labels"].tolist() == [record.label]
    padding = encoded["lm_labels"][0, 0, 3 + room + len(ending):]
    assert (padding == -100).all()


def test_gpt1_takes_the_paper_tokens_too():
    vocab = need_shared_data() / "openai-gpt"
    tokenizer = repo_module("tokenizers").OpenAIGPTTokenizer(vocab / "vocab.json", vocab / "merges.txt")
    model = models.OpenAIGPTDoubleHeadsModel(models.OpenAIGPTConfig(n_positions=32, n_embd=32, n_layer=1, n_head=4))
    special = training.add_choice_tokens(tokenizer, model)
    assert special == [40478, 40479, 40480] and model.config.vocab_size == 40481
    record = repo_module("training.data").Choice("the story begins.", ["it ends well.", "it ends."], 0)
    ids = training.encode_choices([record], tokenizer, special, max_length=32)["input_ids"][0, 0].tolist()
    context, ending = tokenizer.encode(record.context), tokenizer.encode(record.choices[0])
    assert ids[: len(context) + len(ending) + 3] == [40478, *context, 40479, *ending, 40480]


def test_resume_gives_what_an_uninterrupted_run_gives(data, tmp_path):
    common = ("--batch-size", "4", "--grad-accum", "2", "--lr", "1e-3", "--block-size", "32", "--epochs", "2",
              "--max-steps", "10", "--save-every", "3")  # dropout on: the RNG state must come back too
    finetune("finetune-lm", data["base"], data, tmp_path / "straight", *common)
    resumed = tmp_path / "resumed"
    assert cli.main(["finetune-lm", "--resume", str(tmp_path / "straight" / "checkpoint-9"), "--train",
                     str(data["root"] / "train.txt"), "--eval", str(data["root"] / "eval.txt"), "--output",
                     str(resumed), *common]) == 0
    straight, again = weights(tmp_path / "straight"), weights(resumed)
    assert straight.keys() == again.keys()
    for name in straight:
        assert torch.equal(straight[name], again[name]), name
    assert metrics(tmp_path / "straight")[-1] == metrics(resumed)[-1]
    # checkpoint-9 lies inside the first epoch: the resumed run skips the batches already trained on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_gloo_equal_one_process_with_the_global_batch(data, tmp_path):
    common = ["--lr", "1e-3", "--block-size", "32", "--epochs", "1", "--max-steps", "5", "--warmup", "0"]
    two = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(REPO / "hubconf.py"), "finetune-lm",
               "--model", str(data["base_no_dropout"]), "--train", str(data["root"] / "train.txt"),
               "--eval", str(data["root"] / "eval.txt"), "--output", str(two), "--batch-size", "2",
               "--check-ranks-every", "1", *common]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    history = metrics(two)
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]  # the loss goes down
    one = tmp_path / "one"
    finetune("finetune-lm", data["base_no_dropout"], data, one, "--batch-size", "4", *common)
    # Each step, the two ranks' batches of 2 are the single process's batch of 4, and DDP averages
    # their gradients: the same update up to float rounding.
    distributed, single = weights(two), weights(one)
    for name in single:
        torch.testing.assert_close(distributed[name], single[name], rtol=1e-4, atol=1e-5)
    assert abs(history[-1]["eval_loss"] - metrics(one)[-1]["eval_loss"]) < 1e-4


def test_evaluation_sums_are_made_on_the_batchs_device(data):
    """Each batch's counts (tokens, examples) were made on the CPU beside losses on the model's
    device: on a GPU, adding up the evaluation failed at its first batch."""
    from types import SimpleNamespace
    tasks = repo_module("training.tasks")
    tokenizer = repo_module("tokenizers").GPT2Tokenizer.from_pretrained(data["base"])
    model = models.GPT2DoubleHeadsModel.from_pretrained(data["base"])
    root = data["root"]
    made = [tasks.language_modelling(model, tokenizer, [str(root / "train.txt")], [str(root / "eval.txt")], 16),
            tasks.multiple_choice(model, tokenizer, str(root / "train.jsonl"), str(root / "eval.jsonl"), 32)]

    def engine(**inputs):  # what the model gives, on the inputs' device (a GPU's stand-in: meta)
        ids = inputs["input_ids"]
        return SimpleNamespace(logits=torch.zeros(*ids.shape, len(tokenizer), device=ids.device),
                               mc_logits=torch.zeros(ids.shape[:-1], device=ids.device),
                               mc_loss=torch.zeros((), device=ids.device), loss=torch.zeros((), device=ids.device))

    for task in made:
        batch = next(iter(torch.utils.data.DataLoader(task.eval, batch_size=2)))
        sums = task.score(engine, {name: t.to("meta") for name, t in batch.items()})
        assert {name: t.device.type for name, t in sums.items()} == dict.fromkeys(sums, "meta")


def test_one_process_trains_where_the_model_is(data, tmp_path, monkeypatch):
    """Without ``ranks``, train moved a model on a GPU to the CPU (and trained there, slowly)."""
    class Moved(Exception):
        pass

    model = models.GPT2LMHeadModel.from_pretrained(data["base"]).to("meta")  # a GPU's stand-in
    tokenizer = repo_module("tokenizers").GPT2Tokenizer.from_pretrained(data["base"])
    task = repo_module("training.tasks").language_modelling(model, tokenizer, [str(data["root"] / "train.txt")],
                                                            None, 16)

    def to(device):
        raise Moved(device)

    monkeypatch.setattr(model, "to", to)
    with pytest.raises(Moved) as moved:
        training.loop.train(model, task, training.loop.Options(output_dir=str(tmp_path)))
    assert torch.device(moved.value.args[0]).type == "meta"


def test_the_random_state_saved_and_restored_is_the_models_gpus(monkeypatch, tmp_path):
    """On a model's second GPU, the checkpoints kept the first GPU's random state (the current
    device's), so dropout after a resume was not what an uninterrupted run gives."""
    asked = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": asked.append(device) or torch.zeros(8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": asked.append(device))
    second = torch.device("cuda", 1)
    assert loop._gather_rng_states(loop.Ranks(device=second))[0][1] is not None
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    torch.save({"step": 3, "history": [], "epoch_loss": (0.0, 0), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": [(torch.get_rng_state(), torch.zeros(8))], "world": 1},
               tmp_path / repo_module("training.state").STATE_NAME)
    loop.restore(tmp_path, optimizer, scheduler, 0, 1, second)
    assert asked == [second, second]


def test_ranks_that_differ_are_caught(monkeypatch):
    ranks = loop.Ranks(rank=1, world=2)
    model = torch.nn.Linear(2, 2)

    def gather(everyone, mine):  # rank 0 holds other weights
        everyone[0].copy_(mine + 1)
        everyone[1].copy_(mine)

    monkeypatch.setattr(loop.dist, "all_gather", gather)
    with pytest.raises(training.TrainingError, match="after step 3, rank 1's parameters differ"):
        training.loop.check_ranks_agree(model, ranks, 3)


def test_schedule_warms_up_then_decays_to_zero():
    schedule = [loop._schedule(step, warmup=4, total=12) for step in range(13)]
    assert schedule[:4] == [0.25, 0.5, 0.75, 1.0]
    assert schedule[4] == 1.0 and schedule[8] == 0.5 and schedule[12] == 0.0


@pytest.mark.parametrize("line, message", [
    ("not json", "line 1: not JSON"),
    ('{"context": "x", "choices": ["a"], "label": 0}', "line 1: choices must be a list of at least two strings"),
    ('{"context": "x", "choices": ["a", "b"], "label": 2}', "line 1: label must be an index into choices"),
    ('{"context": 3, "choices": ["a", "b"], "label": 0}', "line 1: context must be a string"),
])
def test_bad_records_are_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(training.DataError, match=message):
        training.read_choices(path)


def test_bad_fine_tuning_arguments_give_one_line_errors(data, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "x", "choices": ["a", "b"], "label": 0}\n{"context": "x", "choices": ["a"], "label": 0}\n')
    code = cli.main(["finetune-mc", "--model", str(data["base"]), "--train", str(bad), "--output", str(tmp_path / "o")])
    assert code == 2
    assert "line 2: choices must be a list" in capsys.readouterr().err
    code = cli.main(["finetune-lm", "--model", str(data["base"]), "--train", str(data["root"] / "eval.txt"),
                     "--output", str(tmp_path / "o"), "--batch-size", "64", "--block-size", "64"])
    assert code == 2
    assert "make no full step of 64 x 1" in capsys.readouterr().err
    code = cli.main(["finetune-lm", "--resume", str(data["base"]), "--train", str(data["root"] / "eval.txt"),
                     "--output", str(tmp_path / "o")])
    assert code == 2
    assert "has no trainer_state.pt" in capsys.readouterr().err


def test_transformers_trainer_trains_ours_as_it_trains_its_own(tmp_path):
    """transformers' Trainer passes num_items_in_batch to a forward that takes **kwargs, on every
    step (ours crashed on the first: "unexpected keyword argument"), and divides the loss by it when
    it accumulates gradients. With the same weights, data and seed, both models end the same."""
    require("accelerate")  # what Trainer needs
    transformers = require("transformers")
    from conftest import make_hf_checkpoint

    checkpoint = make_hf_checkpoint(tmp_path / "start")
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17], [18, 19], [20, 21, 22, 23, 24], [25, 26, 27]]
    features = [{"input_ids": row, "labels": row} for row in rows]  # ragged: the item count differs per batch

    def collate(batch):
        width = max(len(f["input_ids"]) for f in batch)
        ids = torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in batch])
        labels = torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in batch])
        return {"input_ids": ids, "labels": labels, "attention_mask": (labels != -100).long()}

    trained = []
    for model in (transformers.GPT2LMHeadModel.from_pretrained(checkpoint), models.GPT2LMHeadModel.from_pretrained(checkpoint)):
        args = transformers.TrainingArguments(output_dir=str(tmp_path / type(model).__module__), max_steps=2,
                                              per_device_train_batch_size=1, gradient_accumulation_steps=3,
                                              learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no",
                                              logging_strategy="no", seed=0, dataloader_num_workers=0)
        transformers.Trainer(model=model.train(), args=args, train_dataset=features, data_collator=collate).train()
        trained.append(model.state_dict())
    theirs, ours = trained
    for name, weight in ours.items():
        torch.testing.assert_close(weight, theirs[name], rtol=1e-4, atol=1e-5, msg=name)
