"""Properties of the tokenizers on generated text (issue 18), sized to run in a few seconds.

GPT-2 is lossless: decode(encode(text)) == text for any valid unicode, control characters and
long whitespace runs included, and the tiktoken path gives pure Python's ids. GPT-1 is not
lossless by design (it lowercases, repairs and standardises text, and decodes words joined by
single spaces): what it keeps of lowercase-able ASCII words is every non-space character, in
order; and any text encodes into its vocabulary and decodes to lowercase text.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from conftest import need_shared_data, repo_module, require
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

tokenizers = repo_module("tokenizers")
gpt2_module = repo_module("tokenizers.gpt2")

# Whitespace of every kind the pattern's \s knows (ASCII, Latin-1, Unicode separators), control
# characters, and a few of each other pre-token class.
WHITESPACE = [" ", "\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\u3000"]
OTHERS = ["a", "Z", "é", "東", "1", "٣", "!", "'s", "'", "\x00", "\x07", "\x7f", "\u200b", "🎉", "\ufeff"]
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
runs = st.lists(st.tuples(st.sampled_from(WHITESPACE + OTHERS), st.integers(1, 300)), max_size=12).map(
    lambda parts: "".join(char * count for char, count in parts))
texts = st.one_of(any_text, runs, st.tuples(runs, any_text, runs).map("".join))
fast_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache
def gpt2_pair():
    require("tiktoken")
    data = need_shared_data() / "gpt2"
    fast = tokenizers.GPT2Tokenizer.from_pretrained(data, use_tiktoken=True)
    assert fast._accelerator() is not None
    return fast, tokenizers.GPT2Tokenizer.from_pretrained(data, use_tiktoken=False)


@fast_settings
@given(text=texts)
@example(text="\n" + " " * 1_000_001)  # past the run that makes tiktoken panic
def test_gpt2_round_trips_any_text(text):
    fast, python = gpt2_pair()
    for tokenizer in (python, fast):
        assert tokenizer.decode(tokenizer.encode(text)) == text


@fast_settings
@given(text=texts, shortest=st.integers(2, 6))
def test_tiktoken_and_pure_python_agree_where_runs_are_split(text, shortest):
    """With the guard's run length made tiny, every whitespace run of generated text is cut out
    and encoded by pure Python: the ids must still be pure Python's on the whole text."""
    fast, python = gpt2_pair()
    saved = gpt2_module.TIKTOKEN_SPACE_RUN
    gpt2_module.TIKTOKEN_SPACE_RUN = shortest
    try:
        ids = fast.encode(text)
    finally:
        gpt2_module.TIKTOKEN_SPACE_RUN = saved
    assert ids == python.encode(text) == fast.encode(text)


@lru_cache
def gpt1():
    require("ftfy"), require("spacy")
    return tokenizers.OpenAIGPTTokenizer.from_pretrained(need_shared_data() / "openai-gpt")


ascii_words = st.lists(st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12),
                       max_size=15)
separators = st.sampled_from([" ", "  ", "\t", "\n", " \n\n ", "\xa0"])


@settings(max_examples=60, deadline=None)
@given(words=ascii_words, separator=separators)
def test_gpt1_keeps_every_non_space_character_of_ascii_words(words, separator):
    text = separator.join(words)
    decoded = gpt1().decode(gpt1().encode(text))
    assert "".join(decoded.split()) == "".join(text.lower().split())


@settings(max_examples=60, deadline=None)
@given(text=texts)
def test_gpt1_encodes_any_text_into_its_vocabulary_and_decodes_lowercase(text):
    """Not a fixed point of decode-then-encode: spaCy may cut the decoded words elsewhere
    ("0A." -> "0a ." -> "0a", ".")."""
    ids = gpt1().encode(text)
    assert all(0 <= i < gpt1().vocab_size for i in ids)
    decoded = gpt1().decode(ids)
    assert decoded == decoded.lower() == decoded.strip()


@pytest.mark.parametrize("text", ["", " ", "\n" * 3, "\x00", "a" * 5000], ids=["empty", "space", "newlines", "nul", "5000-letters"])
def test_gpt2_edge_texts_agree(text):
    fast, python = gpt2_pair()
    assert fast.encode(text) == python.encode(text) and python.decode(python.encode(text)) == text
