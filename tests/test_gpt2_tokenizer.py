"""GPT-2's tokenizer against OpenAI's own encoder (the expected ids in shared/data), tiktoken and
Hugging Face's tokenizer."""

import json
from functools import lru_cache

import pytest
import torch
from conftest import REPO, corpus_and_expected, mismatches_with_expected, need_shared_data, repo_module, require
from hypothesis import given, settings
from hypothesis import strategies as st

tokenizers = repo_module("tokenizers")
bpe = repo_module("tokenizers.bpe")
GPT2Tokenizer = tokenizers.GPT2Tokenizer


def corpus():
    return corpus_and_expected("gpt2")


@pytest.fixture(scope="module", params=[False, True], ids=["pure-python", "tiktoken"])
def tokenizer(request):
    if request.param:
        require("tiktoken")
    tok = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", use_tiktoken=request.param)
    assert (tok._accelerator() is not None) == request.param
    return tok


@pytest.fixture(scope="module")
def python_tokenizer():
    return GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", use_tiktoken=False)


def test_ids_equal_openai_encoder_on_every_line_and_file(tokenizer):
    mismatches = mismatches_with_expected(tokenizer.encode, "gpt2")
    assert not mismatches, mismatches[:10]


def test_decode_inverts_encode_on_the_corpus(tokenizer):
    files, _ = corpus()
    for name, (text, _) in files.items():
        assert tokenizer.decode(tokenizer.encode(text)) == text, name


def test_openai_vocabulary_files_and_hugging_face_names_load_the_same():
    data = need_shared_data() / "gpt2"
    openai = GPT2Tokenizer(data / "encoder.json", data / "vocab.bpe")
    hf_names = GPT2Tokenizer(data / "vocab.json", data / "merges.txt")
    assert openai.encode("hello world") == hf_names.encode("hello world") == [31373, 995]
    assert len(openai) == openai.vocab_size == 50257 and openai.eos_token_id == 50256


def tiktoken_oracle():
    tiktoken = require("tiktoken")
    tok = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", use_tiktoken=False)
    ranks = {bytes(tok.byte_decoder[c] for c in t): i for t, i in tok.encoder.items() if i < 50256}
    pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding("oracle", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


valid_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(text=valid_text)
def test_generated_text_matches_tiktoken_and_round_trips(text):
    oracle, tok = _oracle_and_python()
    ids = tok.encode(text)
    assert ids == oracle.encode_ordinary(text)
    assert tok.decode(ids) == text


@lru_cache
def _oracle_and_python():
    return tiktoken_oracle(), GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", use_tiktoken=False)


def test_long_runs_without_spaces(python_tokenizer):
    oracle = tiktoken_oracle()
    line = "".join("abcdefghijklmnopqrstuvwxyz"[(i * 7919) % 26] for i in range(200_000))
    assert python_tokenizer.encode(line) == oracle.encode_ordinary(line)
    letters = "a" * 1_000_000
    ids = python_tokenizer.encode(letters)
    assert ids == oracle.encode_ordinary(letters) and python_tokenizer.decode(ids) == letters


def test_heap_merges_equal_the_rescanning_loop(python_tokenizer):
    files, _ = corpus()
    words = {p for text, _ in files.values() for p in python_tokenizer._pattern.findall(text[:200_000])}
    for word in sorted(words)[:5000]:
        symbols = list(word.encode().decode("latin-1").translate(python_tokenizer.byte_encoder))
        assert bpe._merge_with_heap(symbols, python_tokenizer.bpe_ranks) == bpe.merge_symbols(symbols, python_tokenizer.bpe_ranks)


def test_cache_is_bounded():
    tok = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", use_tiktoken=False)
    tok._cache.limit = 1000
    tok.encode(" ".join(f"w{i}" for i in range(5000)))
    assert 0 < len(tok._cache) <= 1000


def test_special_token_text_is_ordinary_unless_asked(python_tokenizer):
    text = "a<|endoftext|>b"
    plain = python_tokenizer.encode(text)
    assert 50256 not in plain and python_tokenizer.decode(plain) == text
    parsed = python_tokenizer.encode(text, parse_special_tokens=True)
    assert parsed == python_tokenizer.encode("a") + [50256] + python_tokenizer.encode("b")
    assert python_tokenizer(text, parse_special_tokens=True)["input_ids"] == parsed
    assert python_tokenizer.decode(parsed, skip_special_tokens=True) == "ab"


def test_bad_input_raises_clear_errors(python_tokenizer):
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at index 3"):
        python_tokenizer.encode("abc\ud800")
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        python_tokenizer.encode(b"abc")
    with pytest.raises(TypeError, match="got int"):
        python_tokenizer.tokenize(5)
    with pytest.raises(ValueError, match="token id 50257 is not in the vocabulary"):
        python_tokenizer.decode([31373, 50257])
    with pytest.raises(ValueError, match="token id -1 is negative"):
        python_tokenizer.decode([-1])


def test_ids_ending_inside_a_character_decode_per_errors():
    data = need_shared_data() / "gpt2"
    rare = GPT2Tokenizer.from_pretrained(data).encode("𝔘")  # four bytes in several tokens
    assert len(rare) > 1
    assert GPT2Tokenizer.from_pretrained(data).decode(rare[:-1]) == "\ufffd"
    assert GPT2Tokenizer.from_pretrained(data, errors="ignore").decode(rare[:-1]) == ""
    with pytest.raises(UnicodeDecodeError):
        GPT2Tokenizer.from_pretrained(data, errors="strict").decode(rare[:-1])


HF_TEXTS = ["Hello world", " leading space", "Who was Jim Henson ? Jim Henson was a puppeteer",
            "naïve café – 東京 🎉", "tabs\tand\nnewlines\n\n", "I've got 1,234.56 dollars!!"]


@pytest.fixture(scope="module")
def hugging_face():
    transformers = require("transformers")
    return transformers.GPT2Tokenizer.from_pretrained(str(need_shared_data() / "gpt2"))


def test_api_matches_hugging_face(python_tokenizer, hugging_face):
    for text in HF_TEXTS:
        assert python_tokenizer.tokenize(text) == hugging_face.tokenize(text)
        tokens = python_tokenizer.tokenize(text)
        assert python_tokenizer.convert_tokens_to_ids(tokens) == hugging_face.convert_tokens_to_ids(tokens)
        ids = python_tokenizer.encode(text)
        assert ids == hugging_face.encode(text)
        assert python_tokenizer.convert_ids_to_tokens(ids) == hugging_face.convert_ids_to_tokens(ids)
        assert python_tokenizer.decode(ids) == hugging_face.decode(ids)
    assert python_tokenizer.encode(HF_TEXTS[2], max_length=5, truncation=True) == hugging_face.encode(HF_TEXTS[2], max_length=5, truncation=True)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_match_hugging_face(side, hugging_face):
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2")
    ours.pad_token = ours.eos_token
    hugging_face.pad_token = hugging_face.eos_token
    hugging_face.padding_side = side
    mine = ours(HF_TEXTS, padding=True, return_tensors="pt", padding_side=side)
    theirs = hugging_face(HF_TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(mine["input_ids"], theirs["input_ids"])
    assert torch.equal(mine.attention_mask, theirs["attention_mask"])
    assert ours.batch_decode(mine.input_ids, skip_special_tokens=True) == HF_TEXTS
    pair = ours("first part", "second part", truncation="longest_first", max_length=3)
    assert pair["input_ids"] == hugging_face("first part", "second part", truncation="longest_first", max_length=3)["input_ids"]


@pytest.mark.parametrize("kwargs", [
    {"padding": "max_length", "max_length": 4}, {"padding": True, "max_length": 4}, {"padding": "longest", "max_length": 4},
    {"padding": False, "max_length": 4}, {"max_length": 4}, {"padding": "max_length", "max_length": 4, "truncation": True},
    {"padding": "max_length", "max_length": 20, "truncation": False}, {"padding": "max_length"},
])
def test_padding_and_max_length_without_truncation_match_hugging_face(kwargs, hugging_face, monkeypatch):
    """transformers truncates to max_length unasked only without padding (with padding it is the
    padded width and long rows stay whole); ours cut every row to max_length. padding="max_length"
    without one pads to model_max_length (ours refused it)."""
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2")
    ours.pad_token, hugging_face.pad_token = ours.eos_token, hugging_face.eos_token
    hugging_face.padding_side = "right"
    monkeypatch.setattr(hugging_face, "model_max_length", 1024)  # the hub's gpt2 says so; these bare files do not
    texts = [HF_TEXTS[2], "Hi"]
    mine, theirs = ours(texts, **kwargs), hugging_face(texts, **kwargs)
    assert mine["input_ids"] == theirs["input_ids"] and mine["attention_mask"] == theirs["attention_mask"]


def test_common_transformers_calls_answer_as_transformers_does(hugging_face):
    """Each of these was refused or missing: decode of a batch, return_tensors="np", a batch of
    (text, pair) tuples, added tokens outside the byte alphabet in convert_tokens_to_string, and
    is_fast, name_or_path, num_special_tokens_to_add, get_special_tokens_mask."""
    numpy = require("numpy")
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2")
    batch = torch.tensor([[31373, 995], [995, 31373]])
    assert ours.decode(batch) == hugging_face.decode(batch) == ["hello world", " worldhello"]
    assert ours.decode([[31373, 995]]) == hugging_face.decode([[31373, 995]])
    ours.pad_token, hugging_face.pad_token = ours.eos_token, hugging_face.eos_token
    hugging_face.padding_side = "right"
    mine, theirs = (t(["hello world", "hi"], return_tensors="np", padding=True) for t in (ours, hugging_face))
    for key in ("input_ids", "attention_mask"):
        assert isinstance(mine[key], numpy.ndarray) and mine[key].dtype == numpy.int64
        assert numpy.array_equal(mine[key], theirs[key])
    pairs = [("a b", "c"), ("d", "e f")]
    assert ours(pairs)["input_ids"] == hugging_face(pairs)["input_ids"] == ours.batch_encode_plus(pairs)["input_ids"]
    added = type(hugging_face).from_pretrained(str(need_shared_data() / "gpt2"))  # not the shared one
    for tokenizer in (ours, added):
        tokenizer.add_tokens(["思考"])
    tokens = ours.convert_ids_to_tokens(ours.encode("I 思考 so"))  # was a KeyError
    assert ours.convert_tokens_to_string(tokens) == "I 思考 so" == added.decode(added.encode("I 思考 so"))
    assert ours.is_fast is False and ours.name_or_path == str(need_shared_data() / "gpt2")
    assert ours.num_special_tokens_to_add() == hugging_face.num_special_tokens_to_add() == 0
    assert ours.num_special_tokens_to_add(pair=True) == hugging_face.num_special_tokens_to_add(pair=True)
    assert (ours.get_special_tokens_mask([1, 2, 50256], already_has_special_tokens=True)
            == hugging_face.get_special_tokens_mask([1, 2, 50256], already_has_special_tokens=True) == [0, 0, 1])
    assert ours.get_special_tokens_mask([1, 2, 50256]) == [0, 0, 0]  # none are added (transformers' raises here)


def test_transformers_options_off_are_taken_and_on_are_refused_by_name(python_tokenizer, hugging_face):
    """Scripts pass return_token_type_ids=False or return_overflowing_tokens=False (and verbose):
    they were "unexpected keyword arguments"; asked for, they are refused saying what there is."""
    off = dict(return_token_type_ids=False, return_overflowing_tokens=False, return_special_tokens_mask=False,
               return_offsets_mapping=False, return_length=False, is_split_into_words=False, verbose=False)
    texts = ["Hello world", "a"]
    assert dict(python_tokenizer(texts, **off)) == dict(hugging_face(texts, **off))
    assert python_tokenizer.encode("Hello", return_token_type_ids=False) == hugging_face.encode("Hello")
    with pytest.raises(TypeError, match="return_token_type_ids=True: this tokenizer gives input_ids and attention_mask only"):
        python_tokenizer("Hello", return_token_type_ids=True)
    with pytest.raises(TypeError, match="unexpected keyword arguments: bogus"):
        python_tokenizer("Hello", bogus=False)


@pytest.mark.parametrize("side", ["left", "right"])
def test_hugging_faces_data_collator_and_older_names_work(side, hugging_face):
    """DataCollatorForLanguageModeling needs tokenizer.pad (an AttributeError here before), and
    transformers users call special_tokens_map, transformers 4's encode_plus and batch_encode_plus,
    and decode ids taken one by one from a tensor or a NumPy array (refused before: "token ids must
    be ints")."""
    transformers = require("transformers")
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", padding_side=side)
    for tokenizer in (ours, hugging_face):
        tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, side
    features = [HF_TEXTS[0], HF_TEXTS[2]]
    batches = [transformers.DataCollatorForLanguageModeling(t, mlm=False, pad_to_multiple_of=8)([dict(t(x)) for x in features])
               for t in (ours, hugging_face)]
    assert batches[0].keys() == batches[1].keys() and all(torch.equal(batches[0][k], batches[1][k]) for k in batches[1])
    assert batches[0]["input_ids"].size(1) % 8 == 0
    assert dict(ours.encode_plus(HF_TEXTS[1])) == dict(hugging_face(HF_TEXTS[1]))  # transformers 4's names
    assert dict(ours.batch_encode_plus(features)) == dict(hugging_face(features))
    assert ours.special_tokens_map == hugging_face.special_tokens_map
    ids = torch.tensor(ours.encode(HF_TEXTS[1]))
    assert ours.decode(list(ids)) == ours.decode(list(ids.numpy())) == hugging_face.decode(ids.tolist())


@pytest.mark.parametrize("family", ["gpt2", "openai-gpt"])
def test_a_tokenizer_saved_by_transformers_5_loads(tmp_path, family):
    """transformers 5 saves tokenizer.json and tokenizer_config.json only: loading that folder
    failed ("provides no vocab.json or encoder.json")."""
    transformers = require("transformers")
    names = {"gpt2": ("GPT2Tokenizer", GPT2Tokenizer), "openai-gpt": ("OpenAIGPTTokenizer", tokenizers.OpenAIGPTTokenizer)}
    hf_name, ours = names[family]
    files, _ = corpus()
    getattr(transformers, hf_name).from_pretrained(str(need_shared_data() / family)).save_pretrained(tmp_path)
    assert not (tmp_path / "vocab.json").exists() and (tmp_path / "tokenizer.json").exists()
    saved, original = ours.from_pretrained(tmp_path), ours.from_pretrained(need_shared_data() / family)
    lines = [line for _, file_lines in files.values() for line in file_lines[:20]]
    assert [saved.encode(line) for line in lines] == [original.encode(line) for line in lines]
    assert (saved.eos_token, saved.unk_token, len(saved)) == (original.eos_token, original.unk_token, len(original))


def test_tokens_added_before_transformers_5_saved_are_kept(tmp_path):
    """Its added tokens live in tokenizer.json's added_tokens and tokenizer_config.json's
    extra_special_tokens: they were dropped (len 50257 for 50261, "<pad>" read as the unk id)."""
    hugging_face = require("transformers").GPT2Tokenizer.from_pretrained(str(need_shared_data() / "gpt2"))
    hugging_face.add_tokens(["<new>"])
    hugging_face.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<sp1>"]})
    hugging_face.save_pretrained(tmp_path)
    ours = GPT2Tokenizer.from_pretrained(tmp_path)
    assert (len(ours), ours.pad_token_id, ours.additional_special_tokens) == (len(hugging_face), hugging_face.pad_token_id,
                                                                               ["<sp1>"])
    text = "x<new>y<sp1>z<pad>"
    assert ours.encode(text, parse_special_tokens=True) == hugging_face.encode(text)  # special text: see docs/internals.md
    assert ours.encode("x<new>y") == hugging_face.encode("x<new>y")
    beside = tmp_path / "beside"  # saved into a folder that has vocab.json and merges.txt already
    beside.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (beside / name).write_bytes((need_shared_data() / "gpt2" / name).read_bytes())
    hugging_face.save_pretrained(beside)
    again = GPT2Tokenizer.from_pretrained(beside)
    assert (len(again), again.pad_token_id, again.convert_tokens_to_ids("<sp1>")) == (
        len(hugging_face), hugging_face.pad_token_id, hugging_face.convert_tokens_to_ids("<sp1>"))


def test_pad_keeps_labels_dtype_and_do_not_pad_keeps_rows_whole(hugging_face):
    """pad made every passed-through key int64 (regression labels 0.7, 2.9 became 0, 2 through
    DataCollatorWithPadding); padding="do_not_pad" with a max_length truncated, which transformers
    does only for padding=False; a list of 1-D tensors was refused by decode ("token ids must be
    ints"), where transformers decodes each row."""
    transformers = require("transformers")
    numpy = require("numpy")
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", pad_token="<|endoftext|>")
    hugging_face.pad_token = hugging_face.eos_token
    features = [{"input_ids": [31373, 995], "label": 0.7}, {"input_ids": [995], "label": 2.9}]
    mine, theirs = (transformers.DataCollatorWithPadding(t, return_tensors="pt")([dict(f) for f in features])
                    for t in (ours, hugging_face))
    assert mine["labels"].dtype == theirs["labels"].dtype == torch.float32 and torch.equal(mine["labels"], theirs["labels"])
    assert ours.pad([dict(f) for f in features], return_tensors="np")["label"].tolist() == [0.7, 2.9]
    with pytest.raises(ValueError, match="'name' cannot be made into a 'pt' tensor"):
        ours.pad([{"input_ids": [1], "name": "a"}, {"input_ids": [2], "name": "b"}], return_tensors="pt")
    text = HF_TEXTS[2]
    for padding in ("do_not_pad", transformers.utils.PaddingStrategy.DO_NOT_PAD):
        assert ours(text, padding=padding, max_length=3)["input_ids"] == hugging_face(text, padding=padding, max_length=3)["input_ids"]
    assert len(ours(text, padding=False, max_length=3)["input_ids"]) == 3
    rows = [torch.tensor([31373, 995]), numpy.array([995, 995])]
    assert ours.decode(rows) == hugging_face.decode([r.tolist() for r in rows]) == ["hello world", " world world"]


def test_pad_refuses_what_it_cannot_pad():
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", pad_token="<|endoftext|>")
    with pytest.raises(TypeError, match="list of dicts"):
        ours.pad([[1, 2], [3]])
    with pytest.raises(ValueError, match="attention_mask and input_ids differ in length"):
        ours.pad([{"input_ids": [1, 2], "attention_mask": [1]}])
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive int"):
        ours.pad([{"input_ids": [1, 2]}], pad_to_multiple_of=0)
    one = ours.pad({"input_ids": [5, 6], "attention_mask": [0, 1]}, max_length=4, padding="max_length")
    assert one == {"input_ids": [5, 6, 50256, 50256], "attention_mask": [0, 1, 0, 0]}  # a given mask is kept
    with pytest.raises(ValueError, match="rows would be longer than max_length"):  # was: rows of 8, past max_length
        ours(["a b"], padding="max_length", max_length=5, truncation=True, pad_to_multiple_of=4)
    assert len(ours(["a b"], padding="max_length", max_length=5, pad_to_multiple_of=4)["input_ids"][0]) == 8  # as HF
    with pytest.raises(ValueError, match="token_type_ids and input_ids differ in length"):
        ours.pad([{"input_ids": [1, 2, 3], "token_type_ids": [0, 0]}])
    rows = [{"input_ids": [1, 2, 3], "token_type_ids": [0, 0, 1]}, {"input_ids": [1, 2, 3, 4, 5], "token_type_ids": [0] * 5}]
    assert ours.pad(rows, padding=False)["token_type_ids"] == [[0, 0, 1], [0] * 5]  # each row as wide as its ids
    single = ours.pad(rows[0], padding="max_length", max_length=6, return_tensors="pt")
    assert single["token_type_ids"].shape == single["input_ids"].shape == (6,)  # one encoding, as transformers


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_pads_the_per_token_rows_beside_the_ids(side):
    """token_type_ids and special_tokens_mask were passed through unpadded: a raw ValueError from
    torch.tensor where transformers pads them (with 0 and 1)."""
    transformers = require("transformers")
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", pad_token="<|endoftext|>")
    theirs = transformers.GPT2Tokenizer.from_pretrained(str(need_shared_data() / "gpt2"))
    theirs.pad_token, theirs.padding_side = theirs.eos_token, side
    rows = [{"input_ids": [1, 2], "token_type_ids": [0, 0], "special_tokens_mask": [0, 1]},
            {"input_ids": [1, 2, 3, 4], "token_type_ids": [0, 1, 1, 1], "special_tokens_mask": [0, 0, 0, 1]}]
    mine, want = ours.pad(rows, return_tensors="pt", padding_side=side), theirs.pad(rows, return_tensors="pt")
    assert sorted(mine) == sorted(want) and all(torch.equal(mine[k], want[k]) for k in want)
    encodings = [theirs(text) for text in HF_TEXTS[:2]]  # transformers' BatchEncoding (a Mapping, not a dict)
    assert torch.equal(ours.pad(encodings, return_tensors="pt", padding_side=side)["input_ids"],
                       theirs.pad(encodings, return_tensors="pt")["input_ids"])


def test_padding_needs_a_pad_token_and_tensors_need_equal_lengths(python_tokenizer):
    with pytest.raises(ValueError, match="tokenizer.pad_token = tokenizer.eos_token"):
        python_tokenizer(["a", "b c"], padding=True)
    with pytest.raises(ValueError, match="padding=True"):
        python_tokenizer(["a", "b c d"], return_tensors="pt")
    with pytest.raises(ValueError, match="padding must be"):
        python_tokenizer("a", padding="both")


def test_added_tokens_and_saving(tmp_path, hugging_face):
    tok = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2")
    assert tok.add_tokens(["<think>", "hello"]) == 1  # "hello" is in the vocabulary already
    assert tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<sep>"]}) == 2
    assert len(tok) == 50260 and tok.pad_token_id == 50258
    ids = tok.encode("a<think>b<sep>")
    assert 50257 in ids and 50259 not in ids  # added tokens match; special ones only when parsed
    assert tok.decode(ids) == "a<think>b<sep>"
    tok.save_pretrained(tmp_path)
    again = GPT2Tokenizer.from_pretrained(tmp_path)
    assert len(again) == 50260 and again.pad_token == "<pad>" and again.encode("a<think>b<sep>") == ids
    assert again.additional_special_tokens == ["<sep>"]
    theirs = type(hugging_face).from_pretrained(str(tmp_path))
    assert theirs.encode("a<think>b") == tok.encode("a<think>b")


def test_add_prefix_space_answers_as_transformers_does():
    """A space is added where a run of text between added tokens does not begin with one, as
    transformers 5 (and 4's fast tokenizer) do; ours added one to every text, once: " hello" gave
    [220, 23748] for [23748], "" gave [220] and "a<x>b" ended in "b" for " b"."""
    transformers = require("transformers")
    tok = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", add_prefix_space=True)
    theirs = transformers.GPT2Tokenizer.from_pretrained(str(need_shared_data() / "gpt2"), add_prefix_space=True)
    assert tok.encode("Hello") == GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2").encode(" Hello")
    for t in (tok, theirs):
        t.add_tokens(["<x>"])
    for text in ["", " hi", "  hi", "hi", "\nhi", "\thi", "a<x>b", "a<x> b", "<x>", "a<x>", "<x><x>c", *HF_TEXTS]:
        assert tok.encode(text) == theirs.encode(text), text
    assert tok.encode("<|endoftext|>b", parse_special_tokens=True) == theirs.encode("<|endoftext|>b")


def test_hub_page_tokenizer_lines_run_verbatim():
    """The tokenizer lines of the 2019 GPT-2 hub page and of the API page (seeds 001, 003)."""
    tokenizer = torch.hub.load(str(REPO), "gpt2Tokenizer", str(need_shared_data() / "gpt2"), source="local")
    text_1 = "Who was Jim Henson ? Jim Henson was a puppeteer"
    text_2 = "Who was Jim Henson ? Jim Henson was a mysterious young man"
    tokenized_text_1 = tokenizer.tokenize(text_1)
    tokenized_text_2 = tokenizer.tokenize(text_2)
    indexed_tokens1 = tokenizer.convert_tokens_to_ids(tokenized_text_1)
    indexed_tokens2 = tokenizer.convert_tokens_to_ids(tokenized_text_2)
    tokens_tensor_1 = torch.tensor([indexed_tokens1])
    tokens_tensor_2 = torch.tensor([indexed_tokens2])
    assert tokens_tensor_1.shape == (1, len(tokenized_text_1)) and tokens_tensor_2.dim() == 2
    assert tokenizer.decode([508]) == " who"
    # seed 003
    tokenizer.pad_token = tokenizer.eos_token
    inputs = tokenizer.encode("The future of artificial intelligence", return_tensors="pt")
    assert inputs.shape == (1, 5)
    texts = ["First sentence.", "Second sentence."]
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    assert encoded["input_ids"].shape == (2, 3)
    text = "Hello, how are you today?"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_token == "<|endoftext|>"


def test_lengths_strides_and_pairs_answer_as_transformers_does(hugging_face):
    """Found by a differential fuzz: encode with max_length and padding cut rows that
    transformers (and our own __call__) keep whole; a stride was checked where nothing is
    truncated (max_length=0 blamed it, unasked); pad_to_multiple_of was checked against
    padding="do_not_pad"; a batch of [text, pair] lists was refused (tuples only)."""
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", pad_token="<|endoftext|>")
    hugging_face.pad_token, hugging_face.padding_side = hugging_face.eos_token, "right"
    text = "hello world foo bar"
    for kwargs in ({"max_length": 2, "padding": "max_length"}, {"max_length": 2, "padding": True},
                   {"max_length": 2}, {"max_length": 0, "truncation": True}, {"max_length": 0},
                   {"max_length": 1, "stride": 2, "padding": "do_not_pad"}):
        assert ours.encode(text, **kwargs) == hugging_face.encode(text, **kwargs), kwargs
        assert ours(text, **kwargs)["input_ids"] == hugging_face(text, **kwargs)["input_ids"], kwargs
    kwargs = {"padding": "do_not_pad", "truncation": True, "max_length": 20, "pad_to_multiple_of": 3}
    assert ours(["hi"], **kwargs)["input_ids"] == hugging_face(["hi"], **kwargs)["input_ids"]
    pairs = [["q", "a b"], ["c d", "e"]]
    assert ours(pairs)["input_ids"] == hugging_face(pairs)["input_ids"] == ours.batch_encode_plus(pairs)["input_ids"]
    with pytest.raises(ValueError, match="max_length must be an int >= 0, got -1"):
        ours(text, max_length=-1, truncation=True)
    with pytest.raises(ValueError, match=r"stride must be in \[0, max_length\)"):
        ours(text, max_length=2, stride=2, truncation=True)
    for strategy in ("only_first", "only_second"):  # a pair keeps a token of each, as in transformers 5
        with pytest.raises(ValueError, match=f"{strategy} truncation cannot shorten"):
            ours("a b", "c d", truncation=strategy, max_length=2)
        assert ours("a b", "c d", truncation=strategy, max_length=3)["input_ids"] == hugging_face(
            "a b", "c d", truncation=strategy, max_length=3)["input_ids"]
    assert ours("a b", truncation="only_first", max_length=0)["input_ids"] == []


def test_pad_answers_as_transformers_does(hugging_face):
    """pad gave lists for rows of tensors (transformers gives tensors of the rows' kind), a [1, n]
    tensor for one unbatched encoding (transformers: [n]) and dropped a given attention_mask
    with return_attention_mask=False (transformers keeps and pads it)."""
    numpy = require("numpy")
    ours = GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2", pad_token="<|endoftext|>")
    hugging_face.pad_token, hugging_face.padding_side = hugging_face.eos_token, "right"

    def same(mine, theirs):
        assert sorted(mine) == sorted(theirs)
        for key in theirs:
            assert type(mine[key]) is type(theirs[key]), key
            assert numpy.array_equal(numpy.asarray(mine[key]), numpy.asarray(theirs[key])), key

    for make in (torch.tensor, numpy.array):
        rows = [{"input_ids": make([1, 2])}, {"input_ids": make([3])}]
        same(ours.pad(rows), hugging_face.pad(rows))
    one = {"input_ids": [1, 2], "attention_mask": [1, 0]}
    same(ours.pad(one, return_tensors="pt"), hugging_face.pad(one, return_tensors="pt"))
    same(ours.pad(one, padding="max_length", max_length=4, return_tensors="pt"),
         hugging_face.pad(one, padding="max_length", max_length=4, return_tensors="pt"))
    rows = [{"input_ids": [1, 2], "attention_mask": [1, 1]}, {"input_ids": [3], "attention_mask": [1]}]
    mine, theirs = ours.pad(rows, return_attention_mask=False), hugging_face.pad(rows, return_attention_mask=False)
    assert mine["input_ids"] == theirs["input_ids"]  # and the given mask is kept; transformers leaves it unpadded
    assert mine["attention_mask"] == [[1, 1], [1, 0]] and theirs["attention_mask"] == [[1, 1], [1]]
    same(ours.pad([{"input_ids": [1, 2]}, {"input_ids": [3]}], return_attention_mask=False),
         hugging_face.pad([{"input_ids": [1, 2]}, {"input_ids": [3]}], return_attention_mask=False))


def test_added_token_objects_and_their_flags_match_and_survive_saving_as_in_transformers(tmp_path):
    """transformers' AddedToken was refused ("must be a str"), so lstrip, rstrip and single_word
    could not be had; and a folder saved by transformers 5 lost which added tokens are special
    (it says so only in tokenizer.json): "<sep>" was then matched in any text and kept by
    decode(skip_special_tokens=True)."""
    transformers = require("transformers")
    AddedToken = require("tokenizers").AddedToken  # Hugging Face's; ours is this repository's tokenizers package
    texts = ["a <x> b", "a  <x>\n\nb", "word<x>word <y> z", "_<y>_ 1<y>2", " <x> . <sep>", "a<x>b <sep> c <new>"]

    def build(tokenizer):
        tokenizer.add_tokens([AddedToken("<x>", lstrip=True, rstrip=True), AddedToken("<y>", single_word=True), "<new>"])
        tokenizer.add_tokens(["<sep>"], special_tokens=True)
        tokenizer.add_special_tokens({"pad_token": AddedToken("<pad>", special=True)})
        return tokenizer

    ours = build(GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2"))
    theirs = build(transformers.GPT2Tokenizer.from_pretrained(str(need_shared_data() / "gpt2")))
    assert len(ours) == len(theirs) and ours.pad_token_id == theirs.pad_token_id
    assert [ours.encode(t, parse_special_tokens=True) for t in texts] == [theirs.encode(t) for t in texts]
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    for mine, other in ((GPT2Tokenizer.from_pretrained(tmp_path / "theirs"), theirs),
                        (ours, transformers.GPT2Tokenizer.from_pretrained(str(tmp_path / "ours"))),
                        (GPT2Tokenizer.from_pretrained(tmp_path / "ours"), theirs)):
        assert [mine.encode(t, parse_special_tokens=True) for t in texts] == [other.encode(t) for t in texts]
        assert mine.encode("x <sep> y") == ours.encode("x <sep>", parse_special_tokens=False) + ours.encode(" y")
        ids = other.encode("x <sep> y <pad>")
        assert mine.decode(ids, skip_special_tokens=True) == other.decode(ids, skip_special_tokens=True) == "x  y "
    with pytest.raises(TypeError, match="a token must be a str or an AddedToken, got int"):
        ours.add_tokens([5])
    for tokenizer in (ours, theirs):  # added again as a str, a token matches plainly again (it kept its strips)
        tokenizer.add_tokens(["<x>"])
    assert ours.encode("a <x> b", parse_special_tokens=True) == theirs.encode("a <x> b") == [64, 220, 50257, 275]


def test_small_calls_answer_as_transformers_does(python_tokenizer, hugging_face):
    """convert_tokens_to_string raised a bare KeyError for a character outside the byte alphabet
    (transformers 5 lets it stand for itself); decode of what the tokenizer returned was
    "token ids must be ints, got 'input_ids'"; tokenize took no pair and ignored any keyword
    (a typo passed silently)."""
    tokens = ["a😀", "Ġb"]
    assert python_tokenizer.convert_tokens_to_string(tokens) == hugging_face.convert_tokens_to_string(tokens) == "a😀 b"
    encoded = python_tokenizer(["hello world", "hi"])
    assert python_tokenizer.decode(python_tokenizer("hello world")) == hugging_face.decode(hugging_face("hello world"))
    assert python_tokenizer.decode(encoded) == ["hello world", "hi"]
    assert python_tokenizer.tokenize("a b", "c") == hugging_face.tokenize("a b", "c")
    assert python_tokenizer.tokenize("a", add_special_tokens=True) == hugging_face.tokenize("a", add_special_tokens=True)
    with pytest.raises(TypeError, match="unexpected keyword arguments: parse_special_token"):
        python_tokenizer.tokenize("<|endoftext|>", parse_special_token=True)


def test_added_token_flags_survive_every_save_and_strip_only_up_to_other_tokens(tmp_path):
    """An adversarial review found: a special token's lstrip/rstrip lost on load (the special ones
    were added again as plain strings, which reset the flags); an added token that is a
    base-vocabulary token dropped on load (added_tokens.json leaves it out); lstrip/rstrip
    swallowing whitespace that other added tokens match ("<r>  x" with "  " added); a record's
    "special": "false" read as True; added_tokens_decoder's ids ignored where added_tokens.json
    disagrees."""
    transformers = require("transformers")
    AddedToken = require("tokenizers").AddedToken
    texts = ["a <x> b", "say  hello  there helloworld", "<r>  x", "a \n\n<r>\n\n b", "  <x>  "]

    def build(tokenizer):
        tokenizer.add_tokens([AddedToken("<x>", lstrip=True, rstrip=True, special=True),
                              AddedToken("hello", lstrip=True, rstrip=True), AddedToken("<r>", rstrip=True), "  ", "\n\n"])
        return tokenizer

    ours = build(GPT2Tokenizer.from_pretrained(need_shared_data() / "gpt2"))
    theirs = build(transformers.GPT2Tokenizer.from_pretrained(str(need_shared_data() / "gpt2")))
    want = [theirs.encode(t) for t in texts]
    assert [ours.encode(t, parse_special_tokens=True) for t in texts] == want
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    for folder in ("ours", "theirs"):
        again = GPT2Tokenizer.from_pretrained(tmp_path / folder)
        assert [again.encode(t, parse_special_tokens=True) for t in texts] == want, folder
        again.save_pretrained(tmp_path / f"{folder}-again")
        back = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path / f"{folder}-again"))
        assert [back.encode(t) for t in texts] == want, folder
    config = tmp_path / "ours" / "tokenizer_config.json"
    saved = json.loads(config.read_text())
    saved["added_tokens_decoder"]["50257"]["special"] = "false"
    config.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="added_tokens_decoder gives '<x>' a special of 'false'; expected true or false"):
        GPT2Tokenizer.from_pretrained(tmp_path / "ours")
    saved["added_tokens_decoder"]["50257"]["special"] = True
    saved["added_tokens_decoder"]["²"] = {"content": "<q>"}
    config.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="gives the token '<q>' the id '²'"):
        GPT2Tokenizer.from_pretrained(tmp_path / "ours")


def test_numpy_lengths_split_special_tokens_and_batch_decode_of_an_encoding(python_tokenizer, hugging_face):
    """max_length as a NumPy int was refused (it worked before a range check was added); stride
    None crashed on a comparison and 2.5 was taken; transformers' split_special_tokens was refused;
    batch_decode of what the tokenizer returned iterated its keys; add_tokens(b"xy") said "got int"."""
    numpy = require("numpy")
    text = "hello world how"
    kwargs = {"max_length": numpy.int64(2), "truncation": True}
    assert python_tokenizer(text, **kwargs)["input_ids"] == hugging_face(text, **kwargs)["input_ids"] == [31373, 995]
    assert python_tokenizer.encode(text, max_length=numpy.int32(2)) == [31373, 995]
    for stride in (None, 2.5, -1):
        with pytest.raises(ValueError, match=f"stride must be an int >= 0, got {stride!r}"):
            python_tokenizer(text, stride=stride)
    special = "a<|endoftext|>b"
    for split in (False, True):
        assert (python_tokenizer.encode(special, split_special_tokens=split)
                == hugging_face.encode(special, split_special_tokens=split))
        assert python_tokenizer.tokenize(special, split_special_tokens=split) == hugging_face.tokenize(
            special, split_special_tokens=split)
    assert python_tokenizer.batch_decode(python_tokenizer(["a b", "c"])) == ["a b", "c"]
    with pytest.raises(TypeError, match="a token must be a str or an AddedToken, got bytes"):
        python_tokenizer.add_tokens(b"xy")
