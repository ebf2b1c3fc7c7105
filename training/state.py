"""Where training writes and what it resumes from: the output folder, checked before any step,
and the checkpoint folders that ``loop.save_checkpoint`` writes (the model, the tokenizer,
``trainer_state.pt``).

A resumed folder is read before anything is trained, and a damaged or foreign one is reported
with the file that is wrong, not as an unpickling or indexing traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import GPTHubError
from ..models.config_base import CONFIG_NAME

STATE_NAME = "trainer_state.pt"

# what save_checkpoint writes, by key: the types a resumed state must have
_STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "step": int, "history": list, "epoch_loss": (list, tuple), "optimizer": dict, "scheduler": dict,
    "rng": (list, tuple), "world": int}


class TrainingError(GPTHubError, ValueError, RuntimeError):
    """Training cannot go on as asked: bad options, an output folder that cannot be written, a
    checkpoint that is damaged or does not fit, ranks apart. (A RuntimeError as before, and a
    ValueError as the library's other errors about a bad value or file.)"""


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse an output folder that could not be written, before anything is trained: a file
    there or above it, or a folder without write permission. Makes nothing."""
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under {existing}, which is a file"
        raise TrainingError(f"the output folder {folder} {where}; expected a folder (new or existing) for "
                            "the checkpoints and the fine-tuned model")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrainingError(f"the output folder {folder} cannot be written: {existing} is not writable")
    return folder


def check_resumable(folder: str | os.PathLike) -> Path:
    """Refuse, before the model is loaded from it, a folder that is not a checkpoint this trainer
    wrote: missing, without ``trainer_state.pt``, or with a ``config.json`` that is not a JSON
    object. (The state itself is checked when it is restored.)"""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingError(f"--resume {folder}: no such folder; expected a checkpoint-STEP folder of an earlier run")
    if not (folder / STATE_NAME).is_file():
        raise TrainingError(f"{folder} is not a checkpoint of this trainer: it has no {STATE_NAME}")
    path = folder / CONFIG_NAME
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"{folder} is not a checkpoint of this trainer: it has no {CONFIG_NAME}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise TrainingError(f"{path} cannot be read as a model config ({type(err).__name__}: {err}); "
                            "expected the JSON object save_pretrained writes") from None
    if not isinstance(config, dict):
        raise TrainingError(f"{path} holds a JSON {type(config).__name__}; expected the JSON object "
                            "save_pretrained writes")
    return folder


def read_state(folder: Path, world: int) -> dict[str, Any]:
    """``trainer_state.pt`` of a checkpoint, refused unless it has what ``save_checkpoint``
    writes, for ``world`` processes."""
    path = folder / STATE_NAME
    if not path.is_file():
        raise TrainingError(f"{folder} is not a checkpoint of this trainer: it has no {STATE_NAME}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip, pickle and torch each fail their own way on a damaged file
        raise TrainingError(f"{path} cannot be read ({type(err).__name__}: {str(err)[:200]}); it is damaged "
                            "or was not written by this trainer") from None
    if not isinstance(state, dict):
        raise TrainingError(f"{path} holds a {type(state).__name__}; expected the dict this trainer saves")
    for key, kind in _STATE_TYPES.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TrainingError(f"{path}: {key!r} is {type(value).__name__}, expected "
                                f"{getattr(kind, '__name__', 'a list')}; the file was not written by this trainer")
    if len(state["epoch_loss"]) != 2 or len(state["rng"]) != state["world"]:
        raise TrainingError(f"{path}: 'epoch_loss' or 'rng' has the wrong length; the file was not written by this trainer")
    if state["world"] != world:
        raise TrainingError(f"{folder} was saved by {state['world']} process(es); resume it with as many, not {world}")
    return state


def restore(folder: Path, optimizer, scheduler, rank: int, world: int,
            device: torch.device) -> tuple[int, list[dict], float, int]:
    """Put the optimizer, scheduler and rank ``rank``'s random state back as the checkpoint had
    them; returns the step, the history and the epoch's loss so far (its running sum and the
    micro-batches counted)."""
    state = read_state(folder, world)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        cpu, cuda = state["rng"][rank]
        torch.set_rng_state(cpu)
        if cuda is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda, device)
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise TrainingError(f"{folder / STATE_NAME} does not fit this model and run ({type(err).__name__}: "
                            f"{str(err)[:200]})") from None
    return state["step"], state["history"], *state["epoch_loss"]
