"""``python hubconf.py COMMAND``: the repository's command line.

``generate`` streams a continuation of a prompt; ``score`` prints a text file's perplexity;
``example`` runs the 2019 GPT-2 hub page's example through ``torch.hub.load`` against a local
checkpoint: yours (``--model DIR``), or a small random one built on the spot with the real
vocabulary (``--vocab DIR``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_VOCAB = REPO.parent / "shared" / "data" / "gpt2"


class UsageError(Exception):
    """A bad command-line argument, reported in one line."""


def build_example_checkpoint(folder: Path, vocab: str | Path) -> Path:
    """A 2-layer GPT-2 with random weights and the real vocabulary files (from a folder, or a
    checkpoint name such as ``gpt2`` through the download layer)."""
    from ..download import resolve_file
    from ..models import GPT2Config, GPT2Model

    for name, openai_name in (("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")):
        try:
            source = resolve_file(vocab, [name, openai_name])
        except FileNotFoundError:
            raise UsageError(f"--vocab {vocab} holds no {name} (nor OpenAI's {openai_name})") from None
        shutil.copy(source, folder / name)
    config = GPT2Config(n_layer=2, n_embd=128, n_head=4)
    GPT2Model.from_config(config).save_pretrained(folder)  # a base checkpoint, like the real gpt2
    return folder


def example(model: str | None, vocab: str) -> None:
    import torch

    folder = tempfile.mkdtemp(prefix="gpt-hub-example-")
    try:
        if model is None:
            model = str(build_example_checkpoint(Path(folder), vocab))
            print(f"(random 2-layer GPT-2 with the real vocabulary in {model}: the tokens are real, the predictions are noise)")
        repo = str(REPO)
        tokenizer = torch.hub.load(repo, "gpt2Tokenizer", model, source="local")
        text_1 = "Who was Jim Henson ? Jim Henson was a puppeteer"
        text_2 = "Who was Jim Henson ? Jim Henson was a mysterious young man"
        tokenized_text_1 = tokenizer.tokenize(text_1)
        tokenized_text_2 = tokenizer.tokenize(text_2)
        indexed_tokens1 = tokenizer.convert_tokens_to_ids(tokenized_text_1)
        indexed_tokens2 = tokenizer.convert_tokens_to_ids(tokenized_text_2)
        tokens_tensor_1 = torch.tensor([indexed_tokens1])
        tokens_tensor_2 = torch.tensor([indexed_tokens2])
        print("tokens:", tokenized_text_1)

        model_ = torch.hub.load(repo, "gpt2Model", model, source="local")
        with torch.no_grad():
            hidden_states_1, past = model_(tokens_tensor_1)
            hidden_states_2, past = model_(tokens_tensor_2, past=past)
        print("gpt2Model hidden states:", tuple(hidden_states_1.shape), "then", tuple(hidden_states_2.shape),
              "with a cache of", past[0][0].shape[-2] , "positions")

        lm_model = torch.hub.load(repo, "gpt2LMHeadModel", model, source="local")
        with torch.no_grad():
            predictions_1, past = lm_model(tokens_tensor_1)
            predictions_2, past = lm_model(tokens_tensor_2, past=past)
        predicted_index = torch.argmax(predictions_2[0, -1, :]).item()
        print("gpt2LMHeadModel next token:", repr(tokenizer.decode([predicted_index])))

        double_head_model = torch.hub.load(repo, "gpt2DoubleHeadsModel", model, source="local")
        # The page stacks two rows of different lengths, which torch.tensor cannot do: pad them.
        width = max(len(indexed_tokens1), len(indexed_tokens2))
        rows = [ids + [tokenizer.eos_token_id] * (width - len(ids)) for ids in (indexed_tokens1, indexed_tokens2)]
        tokens_tensor = torch.tensor([rows])
        mc_token_ids = torch.LongTensor([[len(tokenized_text_1) - 1, len(tokenized_text_2) - 1]])
        with torch.no_grad():
            lm_logits, multiple_choice_logits, presents = double_head_model(tokens_tensor, mc_token_ids)
        print("gpt2DoubleHeadsModel choice logits:", [round(x, 4) for x in multiple_choice_logits[0].tolist()],
              "(the multiple-choice head is freshly initialised: it has to be trained)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_family(model: str, dtype: str | None, head: str = "lm"):
    """A checkpoint's model (``head``: "lm" or "double" heads) and tokenizer, GPT or GPT-2 by its
    config's model_type."""
    import json

    from .. import models, tokenizers
    from ..download import resolve_file

    with open(resolve_file(model, ["config.json"]), encoding="utf-8") as f:
        family = "OpenAIGPT" if json.load(f).get("model_type", "gpt2") == "openai-gpt" else "GPT2"
    model_class = getattr(models, family + {"lm": "LMHeadModel", "double": "DoubleHeadsModel"}[head])
    tokenizer_class = getattr(tokenizers, family + "Tokenizer")
    return model_class.from_pretrained(model, torch_dtype=dtype or "float32"), tokenizer_class.from_pretrained(model)


def finetune(args) -> None:
    """``finetune-lm`` and ``finetune-mc``: load, build the task, train (DDP under torchrun)."""
    import logging

    import torch

    from ..training import DataError, Options, TrainingError, language_modelling, multiple_choice, start_distributed, train

    ranks = start_distributed()
    logging.basicConfig(level=logging.INFO if ranks.main else logging.WARNING, format="%(message)s")
    source = args.resume or args.model
    if source is None:
        raise UsageError("give --model (or --resume a checkpoint)")
    torch.manual_seed(args.seed)  # new rows and heads start the same on every run (DDP copies rank 0's)
    model, tokenizer = load_family(source, "float32", head="lm" if args.command == "finetune-lm" else "double")
    try:
        if args.command == "finetune-lm":
            task = language_modelling(model, tokenizer, args.train, args.eval, args.block_size)
        else:
            task = multiple_choice(model, tokenizer, args.train, args.eval, args.max_length, args.lm_coef)
        options = Options(output_dir=args.output, epochs=args.epochs, batch_size=args.batch_size,
                          grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                          max_grad_norm=args.max_grad_norm, bf16=args.bf16, seed=args.seed, save_every=args.save_every,
                          max_steps=args.max_steps, check_ranks_every=args.check_ranks_every)
        train(model, task, options, ranks, resume=args.resume)
    except (DataError, TrainingError) as err:
        raise UsageError(str(err)) from None
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def generate(args) -> None:
    import torch

    from ..models.generation import TextStreamer

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt:
        raise UsageError("the prompt is empty")
    model, tokenizer = load_family(args.model, args.dtype)
    sample = args.temperature is not None or args.top_k is not None or args.top_p is not None
    options = dict(max_new_tokens=args.max_new_tokens, do_sample=sample, temperature=args.temperature or 1.0,
                   top_k=args.top_k or 0, top_p=args.top_p if args.top_p is not None else 1.0,
                   repetition_penalty=args.repetition_penalty, seed=args.seed,
                   num_return_sequences=args.num_return_sequences, eos_token_id=tokenizer.eos_token_id)
    input_ids = torch.tensor([tokenizer.encode(prompt)])
    room = model.config.n_positions - input_ids.size(1)
    if room <= 0:
        raise UsageError(f"the prompt is {input_ids.size(1)} tokens; the model reads at most {model.config.n_positions}")
    options["max_new_tokens"] = min(options["max_new_tokens"], room)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if args.num_return_sequences == 1:
        write(prompt)
        model.generate(input_ids, streamer=TextStreamer(tokenizer, write), **options)
        write("\n")
        return
    for i, row in enumerate(model.generate(input_ids, **options)):
        write(f"--- {i + 1} ---\n{tokenizer.decode(row.tolist(), skip_special_tokens=True)}\n")


def score(args) -> None:
    """Perplexity with a sliding window: each window of ``max_length`` tokens moves by ``stride``,
    and only the tokens not scored by an earlier window count, each with as much context as the
    window gives."""
    import math

    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {args.file}: {err}") from None
    model, tokenizer = load_family(args.model, args.dtype)
    ids = torch.tensor(tokenizer.encode(text))
    window = args.max_length if args.max_length is not None else model.config.n_positions
    stride = args.stride if args.stride is not None else window
    if not 0 < stride <= window <= model.config.n_positions:
        raise UsageError(f"need 0 < --stride <= --max-length <= {model.config.n_positions}")
    if ids.numel() < 2:
        raise UsageError(f"{args.file} has fewer than two tokens")
    total_nll, counted, scored_until = 0.0, 0, 1  # the first token has nothing to be predicted from
    starts = list(range(0, max(ids.numel() - 1, 1), stride))
    with torch.no_grad():
        for start in tqdm(starts, desc="windows", file=sys.stderr, disable=not sys.stderr.isatty()):
            end = min(start + window, ids.numel())
            logits = model(ids[None, start:end], use_cache=False).logits[0, :-1].float()  # [T-1, V]
            targets = ids[start + 1:end]
            fresh = torch.arange(start + 1, end) >= scored_until  # tokens no earlier window scored
            losses = F.cross_entropy(logits, targets, reduction="none")
            total_nll += float(losses[fresh].sum())
            counted += int(fresh.sum())
            scored_until = end
            if end == ids.numel():
                break
    print(f"perplexity: {math.exp(total_nll / counted):.4f} ({counted} tokens scored, window {window}, stride {stride})")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage plus a message
        self.exit(2, f"error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    main = _Parser(prog="python hubconf.py", description="OpenAI GPT and GPT-2 from this repository.")
    commands = main.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gen = commands.add_parser("generate", help="stream a continuation of a prompt to stdout")
    gen.add_argument("--model", required=True, help="a checkpoint name (gpt2, openai-gpt, ...), hub repo id, directory or URL")
    gen.add_argument("--prompt", required=True, help="the prompt text, or - to read it from stdin")
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, help="sample, with this temperature (default: greedy)")
    gen.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    gen.add_argument("--top-p", type=float, help="sample from the smallest set of tokens with this much probability")
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--seed", type=int, help="make sampling reproducible")
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    gen.add_argument("--num-return-sequences", type=int, default=1)
    sc = commands.add_parser("score", help="print the perplexity of a text file")
    sc.add_argument("--model", required=True, help="a checkpoint name, hub repo id, directory or URL")
    sc.add_argument("file", help="a UTF-8 text file")
    sc.add_argument("--max-length", type=int, help="window length in tokens (default: the model's n_positions)")
    sc.add_argument("--stride", type=int, help="how far each window moves (default: the window length)")
    sc.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    for name, what in (("finetune-lm", "fine-tune a language model on text files"),
                       ("finetune-mc", "fine-tune the multiple-choice head (with the LM loss) on JSON Lines records")):
        ft = commands.add_parser(name, help=what + " (under torchrun: distributed data parallel)")
        ft.add_argument("--model", help="the checkpoint to start from (name, repo id, directory or URL)")
        if name == "finetune-lm":
            ft.add_argument("--train", nargs="+", required=True, help="UTF-8 text files")
            ft.add_argument("--eval", nargs="+", help="text files for the perplexity after each epoch")
            ft.add_argument("--block-size", type=int, help="tokens per example (default: the model's n_positions)")
        else:
            ft.add_argument("--train", required=True, help='JSON Lines: {"context": ..., "choices": [...], "label": i}')
            ft.add_argument("--eval", help="records for the accuracy after each epoch")
            ft.add_argument("--max-length", type=int, help="tokens per choice (default: the model's n_positions)")
            ft.add_argument("--lm-coef", type=float, default=0.5, help="weight of the language-model loss (default 0.5)")
        ft.add_argument("--output", required=True, help="folder for checkpoints, metrics.jsonl and the final model")
        ft.add_argument("--epochs", type=int, default=3, help="(default: %(default)s)")
        ft.add_argument("--batch-size", type=int, default=8, help="examples per process per micro-step")
        ft.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
        ft.add_argument("--lr", type=float, default=6.25e-5, help="peak learning rate (default: %(default)s, the GPT paper's)")
        ft.add_argument("--warmup", type=float, default=0.002, help="warmup: a fraction of the steps, or steps if >= 1")
        ft.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's, on matrices only (default: %(default)s)")
        ft.add_argument("--max-grad-norm", type=float, default=1.0, help="clip gradients to this norm (0: off)")
        ft.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
        ft.add_argument("--seed", type=int, default=0, help="data order, dropout and new weights (default: %(default)s)")
        ft.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (always at each epoch's end)")
        ft.add_argument("--max-steps", type=int, default=0, help="stop after N optimizer steps")
        ft.add_argument("--check-ranks-every", type=int, default=0, help="verify every N steps that ranks hold equal weights")
        ft.add_argument("--resume", help="a checkpoint-STEP folder to go on from")
    run = commands.add_parser("example", help="run the GPT-2 hub page's example on a local checkpoint")
    run.add_argument("--model", help="a checkpoint directory (config.json, weights, vocab.json, merges.txt); "
                                     "default: a small random model with the real vocabulary")
    run.add_argument("--vocab", default=str(SHARED_VOCAB) if SHARED_VOCAB.is_dir() else "gpt2",
                     help="GPT-2's vocabulary files: a folder, or a checkpoint name to download them from (default: %(default)s)")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "example":
            if args.model is not None and not os.path.isdir(args.model):
                raise UsageError(f"--model {args.model} is not a directory")
            example(args.model, args.vocab)
        elif args.command == "generate":
            generate(args)
        elif args.command == "score":
            score(args)
        elif args.command in ("finetune-lm", "finetune-mc"):
            finetune(args)
    except (UsageError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
