"""``generate``: stream a continuation of a prompt to stdout."""

from __future__ import annotations

import sys

import torch

from ..tokenizers.streaming import TextStreamer
from .loading import check_model_options, load_family
from .main import UsageError


def sampling_options(args) -> dict:
    """``generate()``'s keywords. Greedy unless --temperature, --top-k or --top-p asks for
    sampling; --temperature 0 is greedy whatever else is given (as in llama.cpp and OpenAI's API)."""
    asked = args.temperature is not None or args.top_k is not None or args.top_p is not None
    sample = asked and args.temperature != 0
    return dict(do_sample=sample, temperature=args.temperature if sample and args.temperature is not None else 1.0,
                top_k=args.top_k or 0, top_p=args.top_p if args.top_p is not None else 1.0,
                repetition_penalty=args.repetition_penalty, seed=args.seed,
                num_return_sequences=args.num_return_sequences)


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args) -> None:
    check_model_options(args.device, args.quantize, args.dtype)
    if args.num_return_sequences > 1 and not sampling_options(args)["do_sample"]:
        raise UsageError(f"--num-return-sequences {args.num_return_sequences} needs sampling (--temperature, --top-k "
                         "or --top-p): greedy decoding gives one sequence")
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt:
        raise UsageError("the prompt is empty")
    try:  # stdin and argv bring bytes that are not UTF-8 as lone surrogates
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UsageError(f"the prompt is not UTF-8 text (an undecodable byte at character {err.start})") from None
    model, tokenizer = load_family(args.model, args.dtype, quantize=args.quantize, device=args.device)
    input_ids = torch.tensor([tokenizer.encode(prompt)], device=model.device)
    room = model.config.n_positions - input_ids.size(1)
    if room <= 0:
        raise UsageError(f"the prompt is {input_ids.size(1)} tokens; the model reads at most {model.config.n_positions}")
    options = dict(sampling_options(args), max_new_tokens=min(args.max_new_tokens, room),
                   eos_token_id=tokenizer.eos_token_id)
    if args.num_return_sequences == 1:
        write(prompt)
        model.generate(input_ids, streamer=TextStreamer(tokenizer, write), **options)
        write("\n")
        return
    for i, row in enumerate(model.generate(input_ids, **options)):
        write(f"--- {i + 1} ---\n{tokenizer.decode(row.tolist(), skip_special_tokens=True)}\n")
