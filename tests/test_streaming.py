"""tokenizers/streaming.py: the streamed pieces add up to `decode` of the ids, for both families,
over samples of every corpus file fed one id at a time."""

import random

import pytest
import torch
from conftest import TINY, models, need_shared_data, repo_module

streaming = repo_module("tokenizers.streaming")
tokenizers = repo_module("tokenizers")
FAMILIES = {"gpt2": tokenizers.GPT2Tokenizer, "openai-gpt": tokenizers.OpenAIGPTTokenizer}


def stream(tokenizer, ids: list[int], prompt: int, **options) -> list[str]:
    pieces: list[str] = []
    streamer = streaming.TextStreamer(tokenizer, pieces.append, skip_prompt=prompt > 0, **options)
    streamer.put(torch.tensor([ids[:max(prompt, 1)]]))
    for token in ids[max(prompt, 1):]:
        streamer.put(torch.tensor([token]))
    streamer.end()
    return pieces


def after_prompt(tokenizer, ids: list[int], prompt: int) -> str:
    """What decoding the whole adds to the prompt's decoding."""
    return tokenizer.decode(ids)[len(tokenizer.decode(ids[:prompt]).rstrip("\ufffd")):]


def corpus_samples(size: int = 3000):
    for path in sorted((need_shared_data() / "corpus").glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        for start in (0, len(text) // 2, len(text) - size):
            yield f"{path.name}@{start}", text[start:start + size]


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_text_is_the_decoded_text_over_the_corpus(family):
    tokenizer = FAMILIES[family].from_pretrained(need_shared_data() / family)
    for where, sample in corpus_samples():
        ids = tokenizer.encode(sample)
        whole = stream(tokenizer, ids, prompt=0)
        assert "".join(whole) == tokenizer.decode(ids), where
        assert all("\ufffd" not in piece for piece in whole), where  # no character split in two
        assert "".join(stream(tokenizer, ids, prompt=3)) == after_prompt(tokenizer, ids, 3), where


def test_gpt1_words_are_spaced_as_decode_spaces_them():
    tokenizer = FAMILIES["openai-gpt"].from_pretrained(need_shared_data() / "openai-gpt")
    ids = tokenizer.encode("The meaning of life is is is is is")
    assert "".join(stream(tokenizer, ids, prompt=5)) == " is is is is"
    assert "".join(stream(tokenizer, ids, prompt=0)) == "the meaning of life is is is is is"


def test_gpt2_random_ids_with_broken_characters_and_special_tokens():
    tokenizer = FAMILIES["gpt2"].from_pretrained(need_shared_data() / "gpt2")
    rng = random.Random(0)
    byte_tokens = [i for token, i in tokenizer.encoder.items() if len(token) == 1]  # single bytes, often mid-character
    for _ in range(50):
        ids = [rng.choice(byte_tokens) if rng.random() < 0.5 else rng.randrange(50257) for _ in range(80)]
        assert "".join(stream(tokenizer, ids, prompt=0)) == tokenizer.decode(ids)
        assert "".join(stream(tokenizer, ids, prompt=7)) == after_prompt(tokenizer, ids, 7)
        skipping = stream(tokenizer, ids + [50256] + ids[:5], prompt=0, skip_special_tokens=True)
        assert "".join(skipping) == tokenizer.decode(ids + [50256] + ids[:5], skip_special_tokens=True)


def test_with_generate_and_a_batch_is_refused():
    model = models.GPT2LMHeadModel.from_config(models.GPT2Config(**{**TINY, "vocab_size": 50257, "n_positions": 64}))
    tokenizer = FAMILIES["gpt2"].from_pretrained(need_shared_data() / "gpt2")
    pieces = []
    prompt = torch.tensor([tokenizer.encode("Hello")])
    out = model.generate(prompt, max_new_tokens=40, streamer=streaming.TextStreamer(tokenizer, pieces.append))
    assert "".join(pieces) == after_prompt(tokenizer, out[0].tolist(), prompt.size(1))
    with pytest.raises(ValueError, match="one sequence at a time"):
        streaming.TextStreamer(tokenizer, pieces.append).put(torch.zeros(2, 3, dtype=torch.long))
