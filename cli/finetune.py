"""``finetune-lm`` and ``finetune-mc``: load, build the task, train (distributed under torchrun)."""

from __future__ import annotations

import logging

import torch

from ..training import (DataError, Options, TrainingError, check_output_dir, check_readable, check_resumable,
                        language_modelling, multiple_choice, start_distributed, train)
from .loading import load_family
from .main import UsageError


def _listed(paths: str | list[str] | None) -> list[str]:
    """--train or --eval's files (finetune-lm takes several, finetune-mc one)."""
    return [] if paths is None else [paths] if isinstance(paths, str) else list(paths)


def run(args) -> None:
    source = args.resume or args.model
    if source is None:
        raise UsageError("give --model (or --resume a checkpoint)")
    try:  # what can be checked before the (slow) loading and training
        check_output_dir(args.output)
        if args.resume:
            check_resumable(args.resume)
        for path in _listed(args.train) + _listed(args.eval):
            check_readable(path)
    except (DataError, TrainingError) as err:
        raise UsageError(str(err)) from None
    ranks = start_distributed()
    logging.basicConfig(level=logging.INFO if ranks.main else logging.WARNING, format="%(message)s")
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
