"""The fine-tuning loop, on PyTorch's own engine: AdamW with linear warmup then linear decay,
gradient accumulation and clipping, bfloat16 autocast, evaluation each epoch, checkpoints that
resume to the same result as an uninterrupted run, and DistributedDataParallel when started by
``torchrun`` (gloo on CPU, nccl on GPU).

What is trained on is a ``Task``: tensors with one row per example, how a batch becomes a loss,
and how a batch is scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .state import STATE_NAME, TrainingError, check_output_dir, restore

logger = logging.getLogger(__name__)


@dataclass
class Options:
    output_dir: str
    epochs: int = 1
    batch_size: int = 8  # per process, per micro-step
    grad_accum: int = 1
    lr: float = 6.25e-5  # the GPT paper's fine-tuning rate
    warmup: float = 0.002  # a fraction of all steps (the paper's 0.2%), or a number of steps if >= 1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    bf16: bool = False
    seed: int = 0
    save_every: int = 0  # optimizer steps between checkpoints; 0: at the end of each epoch only
    max_steps: int = 0  # stop after this many optimizer steps; 0: run every epoch
    check_ranks_every: int = 0  # compare parameters across ranks every this many steps


class Rows(Dataset):
    """Named tensors sharing their first dimension; an item is one row of each."""

    def __init__(self, tensors: dict[str, Tensor]):
        sizes = {t.size(0) for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"tensors of different lengths: {sizes}")
        self.tensors = tensors

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).size(0)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}


@dataclass
class Task:
    """``loss(model, batch)`` is minimised; ``score(model, batch)`` returns sums (a dict of
    tensors, added in float64) that are added over the evaluation set and all ranks, then ``summarise``d."""

    train: Rows
    eval: Rows | None
    loss: Callable[[nn.Module, dict[str, Tensor]], Tensor]
    score: Callable[[nn.Module, dict[str, Tensor]], dict[str, Tensor]]
    summarise: Callable[[dict[str, float]], dict[str, float]]
    save_extra: Callable[[Path], None] = field(default=lambda folder: None)  # e.g. the tokenizer


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_distributed() -> Ranks:
    """Join the process group ``torchrun`` describes in the environment; one process otherwise."""
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks(device=torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), torch.device("cuda", local) if cuda else torch.device("cpu"))


def train(model: nn.Module, task: Task, options: Options, ranks: Ranks | None = None,
          resume: str | Path | None = None) -> list[dict]:
    """Fine-tune ``model`` in place; returns one record per evaluation (also written, by rank 0,
    to ``output_dir/metrics.jsonl``). ``resume`` is a checkpoint folder this function wrote; the
    model must already hold that checkpoint's weights. Without ``ranks``, one process on the
    model's own device."""
    ranks = ranks or Ranks(device=next(model.parameters()).device)
    _check(options, ranks)
    torch.manual_seed(options.seed + ranks.rank)  # ranks drop out different units
    model.to(ranks.device)
    engine = DistributedDataParallel(model) if ranks.world > 1 else model

    sampler = DistributedSampler(task.train, num_replicas=ranks.world, rank=ranks.rank, shuffle=True,
                                 seed=options.seed, drop_last=True)
    loader = DataLoader(task.train, batch_size=options.batch_size, sampler=sampler, drop_last=True,
                        generator=torch.Generator().manual_seed(options.seed))  # leaves the global RNG to dropout
    steps_per_epoch = len(loader) // options.grad_accum
    if steps_per_epoch == 0:
        raise TrainingError(
            f"{len(task.train)} training examples make no full step of {options.batch_size} x {options.grad_accum}"
            f" (batch x accumulation) on each of {ranks.world} process(es)")
    total = steps_per_epoch * options.epochs
    if options.max_steps:
        total = min(total, options.max_steps)
    # AdamW's fused kernel: several times faster per step than the default (docs/performance.md).
    optimizer = torch.optim.AdamW(_parameter_groups(model, options.weight_decay), lr=options.lr,
                                  fused=ranks.device.type in ("cpu", "cuda"))
    warmup = options.warmup if options.warmup >= 1 else math.ceil(options.warmup * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _schedule(step, int(warmup), total))

    step, history, running, micro = 0, [], 0.0, 0
    if resume is not None:
        step, history, running, micro = restore(Path(resume), optimizer, scheduler, ranks.rank, ranks.world, ranks.device)
    elif task.eval is not None:
        history.append({"epoch": 0, "step": 0, **evaluate(model, task, options, ranks)})
        _report(history[-1], options, ranks)

    autocast = torch.autocast(ranks.device.type, dtype=torch.bfloat16, enabled=options.bf16)
    from tqdm import tqdm

    progress = tqdm(total=total, initial=step, desc="steps", disable=not ranks.main, dynamic_ncols=True)
    epoch = step // steps_per_epoch
    while step < total:
        sampler.set_epoch(epoch)
        done_in_epoch = (step - epoch * steps_per_epoch) * options.grad_accum
        engine.train()
        if done_in_epoch == 0:
            running, micro = 0.0, 0  # the epoch's mean training loss (carried across a resume)
        for index, batch in enumerate(loader):
            if index < done_in_epoch:
                continue  # resuming: these batches were trained on before the checkpoint
            if index >= steps_per_epoch * options.grad_accum:
                break  # an incomplete accumulation at the end of the epoch is left out
            batch = {name: t.to(ranks.device) for name, t in batch.items()}
            last_micro = (index + 1) % options.grad_accum == 0
            with (engine.no_sync() if ranks.world > 1 and not last_micro else contextlib.nullcontext()), autocast:
                loss = task.loss(engine, batch) / options.grad_accum
                loss.backward()
            running += float(loss.detach())
            micro += 1
            if not last_micro:
                continue
            if options.max_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{running * options.grad_accum / micro:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if options.check_ranks_every and step % options.check_ranks_every == 0:
                check_ranks_agree(model, ranks, step)
            if step == total or (index + 1) == steps_per_epoch * options.grad_accum:
                break
            if options.save_every and step % options.save_every == 0:
                save_checkpoint(model, task, optimizer, scheduler, step, history, options, ranks, (running, micro))
        epoch += 1
        record = {"epoch": epoch, "step": step, "train_loss": _mean_over_ranks(running * options.grad_accum, micro, ranks)}
        if task.eval is not None:
            record.update(evaluate(model, task, options, ranks))
        history.append(record)
        _report(record, options, ranks)
        save_checkpoint(model, task, optimizer, scheduler, step, history, options, ranks, (0.0, 0))
    progress.close()
    if ranks.main:
        model.save_pretrained(options.output_dir)  # the fine-tuned model, ready for from_pretrained
        task.save_extra(Path(options.output_dir))
    return history


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, options: Options, ranks: Ranks) -> dict[str, float]:
    """Every evaluation example exactly once: rank r takes examples r, r + world, ...; the sums
    are then added over ranks."""
    model.eval()
    mine = Subset(task.eval, range(ranks.rank, len(task.eval), ranks.world))
    totals: dict[str, Tensor] = {}
    autocast = torch.autocast(ranks.device.type, dtype=torch.bfloat16, enabled=options.bf16)
    for batch in DataLoader(mine, batch_size=options.batch_size):
        batch = {name: t.to(ranks.device) for name, t in batch.items()}
        with autocast:
            for name, value in task.score(model, batch).items():
                totals[name] = totals.get(name, 0) + value.double()
    names = sorted(totals)
    summed = torch.stack([totals[n] for n in names]) if names else torch.zeros(0, dtype=torch.float64)
    if ranks.world > 1:
        summed = summed.to(ranks.device)
        dist.all_reduce(summed)
    return task.summarise(dict(zip(names, summed.tolist())))


def check_ranks_agree(model: nn.Module, ranks: Ranks, step: int) -> None:
    """Raise if any rank's parameters differ from rank 0's (compared by exact per-tensor sums)."""
    if ranks.world == 1:
        return
    with torch.no_grad():
        mine = torch.stack([torch.stack((p.double().sum(), p.double().square().sum())) for p in model.parameters()])
    everyone = [torch.empty_like(mine) for _ in range(ranks.world)]
    dist.all_gather(everyone, mine)
    for rank, theirs in enumerate(everyone):
        if not torch.equal(theirs, everyone[0]):
            raise TrainingError(f"after step {step}, rank {rank}'s parameters differ from rank 0's")


def save_checkpoint(model: nn.Module, task: Task, optimizer, scheduler, step: int, history: list[dict],
                    options: Options, ranks: Ranks, epoch_loss: tuple[float, int]) -> Path:
    """``output_dir/checkpoint-STEP``: the model in the save_pretrained layout, the task's extras
    (the tokenizer), and ``trainer_state.pt`` (optimizer, scheduler, step, every rank's RNG
    state). Written to a temporary folder, then renamed: never half there."""
    folder = Path(options.output_dir) / f"checkpoint-{step}"
    states = _gather_rng_states(ranks)
    if ranks.main:
        partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        task.save_extra(partial)
        torch.save({"step": step, "history": history, "epoch_loss": epoch_loss, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": states, "world": ranks.world,
                    "options": dataclasses.asdict(options)}, partial / STATE_NAME)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        logger.info("saved %s", folder)
    if ranks.world > 1:
        dist.barrier()
    return folder


def _gather_rng_states(ranks: Ranks) -> list[tuple[Tensor, Tensor | None]]:
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(ranks.device) if ranks.device.type == "cuda" else None  # the model's GPU's
    if ranks.world == 1:
        return [(cpu, cuda)]
    gathered = []
    for state in (cpu, cuda):
        if state is None:
            gathered.append([None] * ranks.world)
            continue
        everyone = [torch.empty_like(state, device=ranks.device) for _ in range(ranks.world)]
        dist.all_gather(everyone, state.to(ranks.device))
        gathered.append([s.cpu() for s in everyone])
    return list(zip(*gathered))


def _mean_over_ranks(total: float, count: int, ranks: Ranks) -> float:
    sums = torch.tensor([total, count], dtype=torch.float64, device=ranks.device)
    if ranks.world > 1:
        dist.all_reduce(sums)
    return float(sums[0] / sums[1].clamp(min=1))


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices, none on biases and LayerNorm gains (one entry per tensor, tied
    weights once)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def _schedule(step: int, warmup: int, total: int) -> float:
    """Linear warmup to the full rate over ``warmup`` steps, then linear decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _check(options: Options, ranks: Ranks) -> None:
    check_output_dir(options.output_dir)
    for name in ("epochs", "batch_size", "grad_accum"):
        if getattr(options, name) < 1:
            raise TrainingError(f"{name} must be at least 1, got {getattr(options, name)}")
    if options.lr <= 0 or options.warmup < 0 or options.max_grad_norm < 0 or options.weight_decay < 0:
        raise TrainingError("lr must be positive; warmup, max_grad_norm and weight_decay not negative")
    if options.bf16 and ranks.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrainingError("this GPU does not support bfloat16; drop --bf16")


def _report(record: dict, options: Options, ranks: Ranks) -> None:
    if not ranks.main:
        return
    logger.info("epoch %d, step %d: %s", record["epoch"], record["step"],
                ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "step")))
    os.makedirs(options.output_dir, exist_ok=True)
    with open(Path(options.output_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
