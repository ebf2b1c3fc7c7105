"""OpenAI GPT's tokenizer against the original pipeline's ids (shared/data), and each of its
shortcuts against the library it stands in for (ftfy, the original regexes, spaCy)."""

import logging
import re
import subprocess
import sys
from functools import lru_cache

import torch
from conftest import REPO, mismatches_with_expected, need_shared_data, repo_module, require
from hypothesis import given, settings
from hypothesis import strategies as st

ftfy = require("ftfy")
spacy = require("spacy")
openai_gpt = repo_module("tokenizers.openai_gpt")
OpenAIGPTTokenizer = openai_gpt.OpenAIGPTTokenizer


def load(**kwargs):
    return OpenAIGPTTokenizer.from_pretrained(need_shared_data() / "openai-gpt", **kwargs)


def test_ids_equal_the_original_pipeline_on_every_line_and_file():
    mismatches = mismatches_with_expected(load().encode, "openai-gpt")
    assert not mismatches, mismatches[:10]


def test_hub_page_tokenizer_lines():
    """The tokenizer lines of the 2019 GPT hub page (seed 000), verbatim."""
    tokenizer = torch.hub.load(str(REPO), "openAIGPTTokenizer", str(need_shared_data() / "openai-gpt"), source="local")
    text = "Who was Jim Henson ? Jim Henson was a puppeteer"
    tokenized_text = tokenizer.tokenize(text)
    indexed_tokens = tokenizer.convert_tokens_to_ids(tokenized_text)
    tokens_tensor = torch.tensor([indexed_tokens])
    assert tokenized_text[:3] == ["who</w>", "was</w>", "jim</w>"] and tokens_tensor.shape == (1, 14)
    assert tokenizer.convert_ids_to_tokens([tokenizer.convert_tokens_to_ids(".</w>")])[0] == ".</w>"
    assert tokenizer.decode(indexed_tokens) == "who was jim henson ? jim henson was a puppeteer"
    assert len(tokenizer) == 40478 and tokenizer.unk_token_id == 0


def original_standardize(text):
    """text_standardize with the original's own regular expressions."""
    for a, b in (("—", "-"), ("–", "-"), ("―", "-"), ("…", "..."), ("´", "'")):
        text = text.replace(a, b)
    text = re.sub(openai_gpt.ORIGINAL_PAD_PUNCTUATION, r" \1 ", text)
    text = re.sub(r"\s*\n\s*", " \n ", text)
    text = re.sub(r"[^\S\n]+", " ", text)
    return text.strip()


punctuated = st.text(st.sampled_from(list("ab -~!\";?+,)(/*[]}{|_\\'—–―…´\n\t\r\u00a0\u2028 x.")), max_size=80)
mixed = st.text(st.one_of(st.sampled_from(list("abc <>&;#x\r\n\t\x00\x1b\x7f\u00e9\u00c3\u00a9\u201c\ufb01\uff21")),
                          st.characters(exclude_categories=("Cs",))), max_size=80)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(punctuated, mixed))
def test_standardize_equals_the_original_regexes(text):
    assert openai_gpt.text_standardize(text) == original_standardize(text)


@settings(max_examples=500, deadline=None)
@given(lines=st.lists(st.one_of(mixed, st.text(st.sampled_from(list("ab &<>;amp\r\x01")), max_size=20)), max_size=6))
def test_fix_text_shortcut_equals_ftfy(lines):
    text = "\n".join(lines)
    assert openai_gpt.fix_text(text, ftfy) == ftfy.fix_text(text)


@lru_cache
def shared_tokenizer():
    tokenizer = load()
    tokenizer.encode("warm up")  # loads spaCy
    return tokenizer


@lru_cache
def spacy_tokenizer():
    return spacy.blank("en").tokenizer


@settings(max_examples=300, deadline=None)
@given(word=st.one_of(st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzAEIOUXYZ"), min_size=1, max_size=12),
                      st.text(st.sampled_from("0123456789"), min_size=1, max_size=8)))
def test_single_word_chunks_are_single_spacy_tokens(word):
    tokenizer = shared_tokenizer()
    if tokenizer._single_word(word):
        assert [t.text for t in spacy_tokenizer()(word)] == [word]


def test_special_cases_are_not_taken_for_single_words():
    tokenizer = load()
    tokenizer.encode("x")
    for word in ("cannot", "gonna", "Cannot", "dont"):
        assert not tokenizer._single_word(word)
        assert tokenizer.tokenize(word) == [t.text.lower() + "</w>" for t in spacy_tokenizer()(word)]


# Runs of quotes are left out: spaCy itself cuts "'''x" differently depending on what its cache has
# seen before (its own quirk), so no two call orders need agree there.
words = st.lists(st.sampled_from(list("abcXYZ019 .,!?;:-()[]{}$%&*/\\+=<>@#\n\té—…") + ["can't", "U.S.", "e.g.", "cannot", "1990s"]),
                 max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=words)
def test_chunk_cache_equals_spacy_on_the_whole_text(text):
    tokenizer = shared_tokenizer()
    vocab = tokenizer.encoder
    expected = [vocab.get(piece, 0) for token in spacy_tokenizer()(original_standardize(ftfy.fix_text(text)))
                for piece in _original_bpe(tokenizer, token.text.lower())]
    assert tokenizer.encode(text) == expected


def _original_bpe(tokenizer, word):
    joined = " ".join(repo_module("tokenizers.bpe").merge_symbols([*word[:-1], word[-1] + "</w>"], tokenizer.bpe_ranks))
    return ("\n</w>" if joined == "\n  </w>" else joined).split(" ")


def test_fallback_without_spacy_warns_once(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "spacy", None)
    tokenizer = load()
    with caplog.at_level(logging.WARNING):
        first = tokenizer.tokenize("Héllo, World! 東京")
        tokenizer.tokenize("again")
    assert caplog.text.count("falls back to a basic tokenizer") == 1
    assert first == ["hello</w>", ",</w>", "world</w>", "!</w>", "<unk>", "<unk>"]  # CJK: one word per character
    assert load(use_spacy=False).tokenize("Don't stop") == ["don</w>", "'</w>", "t</w>", "stop</w>"]


def test_fine_tuning_special_tokens_and_saving(tmp_path):
    tokenizer = load()
    added = tokenizer.add_special_tokens({"additional_special_tokens": ["_start_", "_delimiter_", "_classify_"]})
    assert added == 3 and len(tokenizer) == 40481
    assert tokenizer.convert_tokens_to_ids(["_start_", "_delimiter_", "_classify_"]) == [40478, 40479, 40480]
    ids = tokenizer.encode("_start_ a story _classify_", parse_special_tokens=True)
    assert ids[0] == 40478 and ids[-1] == 40480
    assert 40478 not in tokenizer.encode("_start_ a story")  # special-token text is ordinary by default
    tokenizer.save_pretrained(tmp_path)
    again = OpenAIGPTTokenizer.from_pretrained(tmp_path)
    assert len(again) == 40481 and again.encode("_start_ a story _classify_", parse_special_tokens=True) == ids
    assert again.decode(ids, skip_special_tokens=True) == "a story"
    tokens = again.convert_ids_to_tokens(ids)  # convert_tokens_to_string was missing for GPT-1
    assert again.convert_tokens_to_string(tokens) == again.decode(ids) and tokens[0] == "_start_"


def test_loading_does_not_import_spacy():
    code = (f"import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('hubconf', {str(REPO / 'hubconf.py')!r})\n"
            "hub = importlib.util.module_from_spec(spec); spec.loader.exec_module(hub)\n"
            f"tok = hub.openAIGPTTokenizer({str(need_shared_data() / 'openai-gpt')!r})\n"
            "assert 'spacy' not in sys.modules and 'ftfy' not in sys.modules\n"
            "tok.encode('hello')\n"
            "assert 'spacy' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO.parent)


def test_decode_around_added_tokens_answers_as_transformers_does():
    """Each run of words between added tokens lost its last space ("hello<new>world" for
    transformers 5's "hello <new>world"): only the last token's word end is no space."""
    transformers = require("transformers")
    ours = load()
    theirs = transformers.OpenAIGPTTokenizer.from_pretrained(str(need_shared_data() / "openai-gpt"))
    for tokenizer in (ours, theirs):
        tokenizer.add_tokens(["<new>", "_start_"])
        tokenizer.add_tokens(["<sep>"], special_tokens=True)
    rows = [ours.encode("hello <new> world"), [27562, 33506, 19877, 40479, 14315, 18470],
            [34902, 40480, 40479, 4832, 40480, 36687], [34167, 35959, 40478, 40479], [40478], [], [507]]
    for ids in rows:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), ids
    assert ours.decode(rows[0]) == "hello <new>world"


def test_a_tokenizer_that_has_encoded_pickles():
    """Once used, it held a lambda over ftfy and spaCy's tokenizer: pickle (DataLoader workers,
    datasets.map with num_proc) failed with "Can't pickle local object"."""
    import pickle

    tokenizer = load()
    text = "Who was Jim Henson? Jim Henson was a puppeteer -- cafés & naïve."
    ids = tokenizer.encode(text)
    again = pickle.loads(pickle.dumps(tokenizer))
    assert again.encode(text) == ids and again._exact is True
