"""``score``: a text file's perplexity with a sliding window."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .loading import check_model_options, load_family
from .main import UsageError


def run(args) -> None:
    """Each window of ``max_length`` tokens moves by ``stride`` (at most its length minus one), and
    only the tokens no earlier window scored count: every token but the first once, each with as
    much context as its window gives."""
    from tqdm import tqdm

    check_model_options(args.device, args.quantize, args.dtype)
    if args.max_length is not None and args.stride is not None and args.stride > args.max_length:
        raise UsageError(f"--stride {args.stride} is longer than --max-length {args.max_length}: tokens would go unscored")
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {args.file}: {err}") from None
    model, tokenizer = load_family(args.model, args.dtype, quantize=args.quantize, device=args.device)
    ids = torch.tensor(tokenizer.encode(text), device=model.device)
    window = args.max_length if args.max_length is not None else model.config.n_positions
    stride = args.stride if args.stride is not None else window
    if not stride <= window <= model.config.n_positions:
        raise UsageError(f"need --stride <= --max-length <= {model.config.n_positions} (the model's n_positions), "
                         f"got stride {stride}, max-length {window}")
    if ids.numel() < 2:
        raise UsageError(f"{args.file} has fewer than two tokens")
    total_nll, counted, scored_until = 0.0, 0, 1  # the first token has nothing to be predicted from
    step = min(stride, window - 1)  # windows overlap by a token at least, or their first tokens go unscored
    starts = list(range(0, max(ids.numel() - 1, 1), step))
    with torch.no_grad():
        for start in tqdm(starts, desc="windows", file=sys.stderr, disable=not sys.stderr.isatty()):
            end = min(start + window, ids.numel())
            logits = model(ids[None, start:end], use_cache=False).logits[0, :-1].float()  # [T-1, V]
            targets = ids[start + 1:end]
            fresh = torch.arange(start + 1, end, device=ids.device) >= scored_until  # tokens no earlier window scored
            losses = F.cross_entropy(logits, targets, reduction="none")
            total_nll += float(losses[fresh].sum())
            counted += int(fresh.sum())
            scored_until = end
            if end == ids.numel():
                break
    print(f"perplexity: {math.exp(total_nll / counted):.4f} ({counted} tokens scored, window {window}, stride {stride})")
