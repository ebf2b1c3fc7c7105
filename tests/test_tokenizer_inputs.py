"""Bad input to the tokenizers never gives a silent wrong answer, a hang or a stray traceback
(issue 18): broken vocabulary and merges files are refused at load with the file named, a bad
``errors`` handler is refused at load, and tiktoken never sees the whitespace runs that make it
panic. Each case here is one row of docs/bad-input.md."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import need_shared_data, repo_module, require

GPTHubError = repo_module("errors").GPTHubError
tokenizers = repo_module("tokenizers")
bpe = repo_module("tokenizers.bpe")
GPT2Tokenizer, OpenAIGPTTokenizer = tokenizers.GPT2Tokenizer, tokenizers.OpenAIGPTTokenizer

BYTES = {char: byte for byte, char in bpe.bytes_to_unicode().items()}  # GPT-2's 256 symbols -> ids 0..255


def gpt2_vocab(**changes) -> dict:
    """The 256 byte symbols, one merge's result and <|endoftext|>; ``changes`` replace entries."""
    return {**BYTES, "Ġt": 256, "<|endoftext|>": 257, **changes}


GPT2_MERGES = "#version: 0.2\nĠ t\n"
ABSENT_BYTE = "Ġ"  # the space's symbol

# id, vocab.json bytes, merges.txt bytes, the file the error must name, what it must say
GPT2_FILES = [
    ("vocab-empty-object", b"{}", GPT2_MERGES.encode(), "vocab.json", "holds no tokens"),
    ("vocab-empty-file", b"", GPT2_MERGES.encode(), "vocab.json", "is empty"),
    ("vocab-not-json", b"{'a': 1}", GPT2_MERGES.encode(), "vocab.json", "is not JSON"),
    ("vocab-a-list", b'["a", "b"]', GPT2_MERGES.encode(), "vocab.json", "holds a JSON list"),
    ("vocab-not-utf8", b'{"\xff": 0}', GPT2_MERGES.encode(), "vocab.json", "is not UTF-8"),
    ("vocab-nested-deep", b"[" * 200_000, GPT2_MERGES.encode(), "vocab.json", "nested too deeply"),
    ("vocab-string-ids", json.dumps({t: str(i) for t, i in gpt2_vocab().items()}).encode(), GPT2_MERGES.encode(),
     "vocab.json", "the id '0'"),
    ("vocab-negative-id", json.dumps(gpt2_vocab(**{"Ġt": -1})).encode(), GPT2_MERGES.encode(), "vocab.json", "id -1"),
    ("vocab-float-id", json.dumps(gpt2_vocab(**{"Ġt": 2.5})).encode(), GPT2_MERGES.encode(), "vocab.json", "id 2.5"),
    ("vocab-bool-id", json.dumps(gpt2_vocab(**{"Ġt": True})).encode(), GPT2_MERGES.encode(), "vocab.json", "id True"),
    ("vocab-shared-id", json.dumps(gpt2_vocab(**{"Ġt": 5})).encode(), GPT2_MERGES.encode(), "vocab.json",
     "gives the id 5 to both"),
    ("vocab-repeated-token", b'{"a": 1, "a": 2}', GPT2_MERGES.encode(), "vocab.json", "lists the key 'a' twice"),
    ("vocab-lacks-a-byte", json.dumps({t: i for t, i in gpt2_vocab().items() if t != ABSENT_BYTE}).encode(),
     b"#version: 0.2\n", "vocab.json", "lacks 1 of the 256 byte-level symbols"),
    ("merge-result-not-in-vocab", json.dumps(gpt2_vocab()).encode(), "#version: 0.2\nĠ q\n".encode(), "merges.txt",
     "merge 1 (Ġ q) has a result 'Ġq'"),
    ("merge-part-not-in-vocab", json.dumps(gpt2_vocab(abc=258)).encode(), b"#version: 0.2\nab c\n",
     "merges.txt", "first part 'ab'"),
    ("merges-empty-file", json.dumps(gpt2_vocab()).encode(), b"", "merges.txt", "is empty"),
    ("merges-not-utf8", json.dumps(gpt2_vocab()).encode(), b"#version: 0.2\n\xc4 t\n", "merges.txt", "is not UTF-8"),
    ("merges-three-symbols", json.dumps(gpt2_vocab()).encode(), "#version: 0.2\nĠ t x\n".encode(), "merges.txt",
     "line 2 is not two symbols"),
    ("merges-one-symbol", json.dumps(gpt2_vocab()).encode(), "#version: 0.2\nĠt\n".encode(), "merges.txt",
     "line 2 is not two symbols"),
    ("merges-double-space", json.dumps(gpt2_vocab()).encode(), "#version: 0.2\nĠ  t\n".encode(), "merges.txt",
     "line 2 is not two symbols"),
    ("merges-a-json-file", json.dumps(gpt2_vocab()).encode(), json.dumps(gpt2_vocab()).encode(), "merges.txt",
     "line 1 is not two symbols"),
    ("merges-repeated", json.dumps(gpt2_vocab()).encode(), "#version: 0.2\nĠ t\nĠ t\n".encode(), "merges.txt",
     "line 3 repeats the merge"),
]


def write(folder: Path, vocab: bytes, merges: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_bytes(vocab)
    (folder / "merges.txt").write_bytes(merges)
    return folder


def assert_refused(make, file: Path, says: str) -> None:
    """``make()`` raises the library's ValueError, naming ``file`` and saying ``says``."""
    with pytest.raises(ValueError) as caught:
        make()
    assert isinstance(caught.value, GPTHubError), repr(caught.value)
    assert str(file) in str(caught.value) and says in str(caught.value), str(caught.value)


def test_a_good_small_vocabulary_loads_and_round_trips(tmp_path):
    folder = write(tmp_path, json.dumps(gpt2_vocab()).encode(), GPT2_MERGES.encode())
    tokenizer = GPT2Tokenizer.from_pretrained(folder)
    assert tokenizer.encode("hello the") == [BYTES[c] for c in "hello"] + [256, BYTES["h"], BYTES["e"]]
    assert tokenizer.decode(tokenizer.encode("héllo\x00 \t ")) == "héllo\x00 \t "


@pytest.mark.parametrize("vocab, merges, file, says", [case[1:] for case in GPT2_FILES], ids=[c[0] for c in GPT2_FILES])
def test_gpt2_vocabulary_files_are_checked_at_load(tmp_path, vocab, merges, file, says):
    folder = write(tmp_path, vocab, merges)
    assert_refused(lambda: GPT2Tokenizer.from_pretrained(folder), folder / file, says)


SETTINGS_FILES = [  # id, file name, content, what the error says
    ("config-not-json", "tokenizer_config.json", b"{model_max_length: 5}", "is not JSON"),
    ("config-a-list", "tokenizer_config.json", b"[]", "holds a JSON list"),
    ("config-not-utf8", "tokenizer_config.json", b'{"pad_token": "\xff"}', "is not UTF-8"),
    ("added-tokens-string-id", "added_tokens.json", b'{"<pad>": "258"}', "gives the token '<pad>' the id '258'"),
    ("added-tokens-nested-deep", "added_tokens.json", b"{" * 100_000, "is not JSON"),
]


@pytest.mark.parametrize("name, content, says", [case[1:] for case in SETTINGS_FILES],
                         ids=[c[0] for c in SETTINGS_FILES])
def test_saved_settings_files_are_checked_at_load(tmp_path, name, content, says):
    folder = write(tmp_path, json.dumps(gpt2_vocab()).encode(), GPT2_MERGES.encode())
    (folder / name).write_bytes(content)
    assert_refused(lambda: GPT2Tokenizer.from_pretrained(folder), folder / name, says)


@pytest.mark.parametrize("document, says", [
    ({"model": {"type": "WordPiece", "vocab": {"a": 0}}}, "holds no BPE model"),
    ({"model": {"type": "BPE", "vocab": {}, "merges": []}}, "holds no tokens"),
    ({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b c"]}}, "merge 1 is not two symbols"),
    ({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"], "a b"]}}, "merge 2 repeats"),
    ({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}, "has a result 'ab' that is not a token"),
    ({"model": {"type": "BPE", "vocab": {"a": "0"}, "merges": []}}, "the id '0'"),
    ([], "holds a JSON list"),
])
def test_a_bad_tokenizer_json_is_named(tmp_path, document, says):
    """tokenizer.json (transformers 5's only vocabulary file) is checked as vocab.json and merges.txt are."""
    (tmp_path / "tokenizer.json").write_text(json.dumps(document))
    assert_refused(lambda: GPT2Tokenizer.from_pretrained(tmp_path), tmp_path / "tokenizer.json", says)


GPT1_VOCAB = {"a": 1, "b": 2, "a</w>": 3, "b</w>": 4, "ab</w>": 5, "<unk>": 0}
GPT1_MERGES = "#version: 0.2\na b</w>\n"
GPT1_FILES = [
    ("vocab-empty-object", b"{}", GPT1_MERGES.encode(), "vocab.json", "holds no tokens"),
    ("vocab-string-ids", json.dumps({t: str(i) for t, i in GPT1_VOCAB.items()}).encode(), GPT1_MERGES.encode(),
     "vocab.json", "the id '1'"),
    ("vocab-not-utf8", b'{"\xe9": 0}', GPT1_MERGES.encode(), "vocab.json", "is not UTF-8"),
    ("vocab-without-id-0", json.dumps({**GPT1_VOCAB, "<unk>": 6}).encode(), GPT1_MERGES.encode(), "vocab.json",
     "has no token with id 0"),
    ("merge-result-not-in-vocab", json.dumps(GPT1_VOCAB).encode(), b"#version: 0.2\nb a</w>\n", "merges.txt",
     "merge 1 (b a</w>) has a result 'ba</w>'"),
    ("merges-without-header", json.dumps(GPT1_VOCAB).encode(), b"a b</w>\n", "merges.txt",
     "not the '#version' header"),
    ("merges-three-symbols", json.dumps(GPT1_VOCAB).encode(), b"#version: 0.2\na b </w>\n", "merges.txt",
     "line 2 is not two symbols"),
    ("merges-empty-file", json.dumps(GPT1_VOCAB).encode(), b"", "merges.txt", "is empty"),
    ("gpt2s-vocabulary", json.dumps(gpt2_vocab()).encode(), GPT2_MERGES.encode(), "vocab.json",  # was loaded: "hell!worl!"
     "it is not GPT-1's vocabulary"),
]


@pytest.mark.parametrize("vocab, merges, file, says", [case[1:] for case in GPT1_FILES], ids=[c[0] for c in GPT1_FILES])
def test_gpt1_vocabulary_files_are_checked_at_load(tmp_path, vocab, merges, file, says):
    folder = write(tmp_path, vocab, merges)
    assert_refused(lambda: OpenAIGPTTokenizer.from_pretrained(folder), folder / file, says)


def test_a_good_small_gpt1_vocabulary_loads(tmp_path):
    tokenizer = OpenAIGPTTokenizer.from_pretrained(write(tmp_path, json.dumps(GPT1_VOCAB).encode(),
                                                         GPT1_MERGES.encode()), use_spacy=False)
    assert tokenizer.encode("ab b zz") == [5, 4, 0, 0]  # a piece missing from the vocabulary is <unk>


DECODE_HANDLERS = ["strict", "replace", "ignore", "backslashreplace", "surrogateescape", "surrogatepass"]


@pytest.mark.parametrize("errors", ["bogus", "xmlcharrefreplace", "namereplace", ""])
def test_a_decode_error_handler_bytes_decode_rejects_is_refused_at_load(errors):
    data = need_shared_data() / "gpt2"
    with pytest.raises(ValueError, match=f"errors={errors!r} is not an error handler") as caught:
        GPT2Tokenizer.from_pretrained(data, errors=errors)
    assert isinstance(caught.value, GPTHubError)


def test_a_decode_error_handler_of_the_wrong_type_is_refused_at_load():
    with pytest.raises(TypeError, match="errors must be the name of a decode error handler") as caught:
        GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", errors=None)
    assert isinstance(caught.value, GPTHubError)


@pytest.mark.parametrize("errors", DECODE_HANDLERS)
def test_every_decode_error_handler_is_accepted(errors):
    tokenizer = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", errors=errors)
    cut = tokenizer.encode("𝔘")[:-1]  # ids ending inside a four-byte character
    if errors in ("strict", "surrogatepass"):
        with pytest.raises(UnicodeDecodeError):
            tokenizer.decode(cut)
    else:
        assert tokenizer.decode(cut) == b"\xf0\x9d\x94".decode("utf-8", errors)


# Whitespace runs of a million characters and more make tiktoken 0.14 panic (pyo3's
# PanicException, a BaseException); the guard must give pure Python's ids, on every kind of run.
LONG_RUNS = {
    "spaces": " " * 1_100_000,
    "newlines-then-word": "\n" * 1_100_000 + "end",
    "word-spaces-word": "start" + " " * 1_100_000 + "end",
    "mixed-whitespace": "a\n" + "\t \n\r\x0b\x0c" * 200_000 + "b c",
    "two-runs": ("x" + " " * 600_000) * 2 + "y",
    "ideographic-spaces": "\u3000" * 1_000_001,
}


@pytest.fixture(scope="module")
def both_paths():
    require("tiktoken")
    data = need_shared_data() / "gpt2"
    fast = GPT2Tokenizer.from_pretrained(data)  # OpenAI's vocabulary: tiktoken by default
    assert fast._accelerator() is not None
    return fast, GPT2Tokenizer.from_pretrained(data, use_tiktoken=False)


@pytest.mark.parametrize("name", LONG_RUNS)
def test_long_whitespace_runs_never_reach_tiktokens_panic(both_paths, name):
    fast, python = both_paths
    text = LONG_RUNS[name]
    try:
        ids = fast.encode(text)
    except BaseException as err:  # noqa: BLE001 - the panic is a BaseException
        pytest.fail(f"the tiktoken path raised {type(err).__name__}: {str(err)[:100]}")
    assert ids == python.encode(text)
    assert fast.decode(ids) == text


streaming = repo_module("tokenizers.streaming")
MISUSES = {  # id -> (call on a small GPT-2 tokenizer, the built-in it must also be)
    "encode-bytes": (lambda t: t.encode(b"abc"), TypeError),
    "encode-lone-surrogate": (lambda t: t.encode("a\ud800"), ValueError),
    "decode-unknown-id": (lambda t: t.decode([10**6]), ValueError),
    "decode-negative-id": (lambda t: t.decode([-1]), ValueError),
    "pad-without-pad-token": (lambda t: t(["a", "bb"], padding=True), ValueError),
    "unknown-keyword": (lambda t: t("a", bogus=1), TypeError),
    "streamer-window": (lambda t: streaming.TextStreamer(t, print, window=2, context=4), ValueError),
}


@pytest.mark.parametrize("case", MISUSES)
def test_tokenizer_errors_are_the_librarys_and_the_fitting_builtin(tmp_path, case):
    tokenizer = GPT2Tokenizer.from_pretrained(write(tmp_path, json.dumps(gpt2_vocab()).encode(), GPT2_MERGES.encode()))
    call, builtin = MISUSES[case]
    with pytest.raises(builtin) as caught:
        call(tokenizer)
    assert isinstance(caught.value, GPTHubError), repr(caught.value)


def test_gpt1_standardizes_long_whitespace_runs_in_linear_time():
    """The original's \\s*\\n\\s* rescans a whitespace run from each of its characters: 100,000
    spaces before a newline took 14 s, a million would take half an hour."""
    openai_gpt = repo_module("tokenizers.openai_gpt")
    from test_openai_gpt_tokenizer import original_standardize

    for text in ("a" + " " * 3000 + "b\n c", " \t\n \x0b" * 500 + "end", "x " + "\u3000" * 2000 + "\n\n"):
        assert openai_gpt.text_standardize(text) == original_standardize(text)
    start = time.perf_counter()
    assert openai_gpt.text_standardize("x" + " " * 100_000 + "y\n z") == "x y \n z"
    assert time.perf_counter() - start < 2
    tokenizer = OpenAIGPTTokenizer.from_pretrained(need_shared_data() / "openai-gpt")
    assert tokenizer.encode("x" + " " * 1_000_000 + "y\n z") == tokenizer.encode("x y\n z")
