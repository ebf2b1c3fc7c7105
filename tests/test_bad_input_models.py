"""Bad input to the models, generate, configs and checkpoint files: a clear error of the library's
own (a GPTHubError that is also a ValueError, TypeError or OSError) naming what is wrong, never a
silent wrong answer or a raw error from deep inside."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY, models, release_copy, repo_module, require

errors = repo_module("errors")
checkpoint = repo_module("models.checkpoint")
release = repo_module("models.openai_release")


def raises(kind: type, match: str, call, *args, **kwargs):
    with pytest.raises(kind, match=match) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, errors.GPTHubError), type(info.value).__mro__
    return info.value


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    return models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval()


@pytest.fixture(scope="module")
def double_heads():
    torch.manual_seed(0)
    return models.GPT2DoubleHeadsModel(models.GPT2Config(**TINY)).eval()


IDS = torch.tensor([[5, 6, 7, 8]])


# -- generate's arguments -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, kind, message", [
    ({"attention_mask": torch.ones(1, 3, dtype=torch.long)}, ValueError, r"attention_mask has shape \[1, 3\]"),
    ({"attention_mask": torch.ones(2, 4, dtype=torch.long)}, ValueError, r"attention_mask has shape \[2, 4\]"),
    ({"attention_mask": torch.tensor([[0, 0, 0, 0]])}, ValueError, "masks every token"),
    ({"attention_mask": torch.tensor([[2, 1, 1, 1]])}, ValueError, "1 for tokens and 0 for padding"),
    ({"attention_mask": torch.tensor([[1, 1, 1, 0]])}, ValueError,
     r"attention_mask row 0 ends in padding: .* pad prompts on the left \(tokenizer.padding_side = 'left'\)"),
    ({"pad_token_id": 8}, ValueError, r"input_ids row 0 ends in pad_token_id=8, which marks padding where no "
                                      r"attention_mask is given \(for a prompt without padding, pass attention_mask="),
    ({"max_new_tokens": -1}, ValueError, r"max_new_tokens must be in \[0"),
    ({"max_new_tokens": 2.5}, TypeError, "max_new_tokens must be an int"),
    ({"do_sample": True, "temperature": float("nan")}, ValueError, "temperature must be a finite number"),
    ({"do_sample": True, "temperature": 0.0}, ValueError, "temperature must be a finite number"),
    ({"repetition_penalty": float("nan")}, ValueError, "repetition_penalty must be a finite number"),
    ({"do_sample": True, "top_k": 1.5}, TypeError, "top_k must be an int"),
    ({"do_sample": True, "top_p": float("nan")}, ValueError, "top_p must be a finite number"),
    ({"do_sample": "yes"}, TypeError, "do_sample must be True or False"),
    ({"pad_token_id": -1}, ValueError, r"pad_token_id must be in \[0, 95\]"),
    ({"eos_token_id": [3, 96]}, ValueError, r"eos_token_id must be in \[0, 95\]"),
    ({"num_return_sequences": 0}, ValueError, "num_return_sequences must be in"),
    ({"seed": "1"}, TypeError, "seed must be an int"),
    ({"do_sample": True, "generator": 7}, TypeError, "generator must be a torch.Generator"),
    ({"do_sample": True, "seed": 2 ** 64}, ValueError, r"seed must be in \[0, 18446744073709551615\], got"),
    ({"do_sample": True, "seed": 1, "generator": torch.Generator()}, ValueError, "give seed or generator, not both"),
    ({"do_sample": True, "temperature": float("inf")}, ValueError, r"temperature must be a finite number in \(0.0, inf\)"),
])
def test_bad_generate_arguments_are_named(gpt2, kwargs, kind, message):
    raises(kind, message, gpt2.generate, IDS, **{"max_new_tokens": 3, **kwargs})


def test_numpy_flags_read_as_flags_everywhere(gpt2):
    """One check of flags for every argument: do_sample took only a Python bool, while pretrained
    and mean_resizing took NumPy's too (a value read from an array or a config)."""
    numpy = require("numpy")
    sampled = gpt2.generate(IDS, max_new_tokens=4, do_sample=numpy.True_, seed=3)
    assert torch.equal(sampled, gpt2.generate(IDS, max_new_tokens=4, do_sample=True, seed=3))
    assert torch.equal(gpt2.generate(IDS, max_new_tokens=4, do_sample=numpy.False_), gpt2.generate(IDS, max_new_tokens=4))


@pytest.mark.parametrize("prompt, message", [
    (torch.zeros(1, 2, 3, dtype=torch.long), r"\[batch, length\]"),
    (torch.tensor(3), r"\[batch, length\]"),
    (torch.zeros(1, 0, dtype=torch.long), "at least one token"),
    (torch.zeros(0, 4, dtype=torch.long), "at least one token"),
    ([[1, 2]], "must be a tensor"),
])
def test_prompts_of_the_wrong_shape_are_named(gpt2, prompt, message):
    raises((ValueError, TypeError), message, gpt2.generate, prompt, max_new_tokens=2)


@pytest.mark.parametrize("where", ["input_ids", "attention_mask"])
def test_a_prompt_on_another_device_than_the_model_is_named(gpt2, where):
    ids, mask = IDS, torch.ones_like(IDS)
    if where == "input_ids":
        ids = ids.to("meta")
    else:
        mask = mask.to("meta")
    raises(ValueError, f"{where} is on meta and the model on cpu", gpt2.generate, ids, attention_mask=mask,
           max_new_tokens=2)


@pytest.mark.parametrize("temperature", [1e-45, 5e-324])  # the second is 0 in float32: 0/0 lost the best token
def test_a_tiny_temperature_samples_the_best_token(gpt2, temperature):
    greedy = gpt2.generate(IDS, max_new_tokens=5)
    assert torch.equal(gpt2.generate(IDS, max_new_tokens=5, do_sample=True, temperature=temperature, seed=0), greedy)


def test_greedy_decoding_takes_the_sampling_options_it_does_not_use(gpt2):
    """As in Hugging Face: temperature 0 (the OpenAI API's greedy one) or top_p 0 with greedy
    decoding, and None for any of the three, were refused."""
    greedy = gpt2.generate(IDS, max_new_tokens=5)
    for options in ({"temperature": 0}, {"top_p": 0.0}, {"temperature": None, "top_k": None, "top_p": None}):
        assert torch.equal(gpt2.generate(IDS, max_new_tokens=5, **options), greedy), options
    sampled = gpt2.generate(IDS, max_new_tokens=5, do_sample=True, seed=3)
    assert torch.equal(gpt2.generate(IDS, max_new_tokens=5, do_sample=True, seed=3, temperature=None, top_k=None,
                                     top_p=None), sampled)


def test_eos_token_id_may_be_a_list(gpt2):
    free = gpt2.generate(IDS, max_new_tokens=8)
    unused = next(t for t in range(96) if t not in free[0].tolist())
    out = gpt2.generate(IDS, max_new_tokens=8, eos_token_id=[unused, int(free[0, 4])], pad_token_id=1)
    assert torch.equal(out, free[:, :5])  # stopped at the first new token, which is in the list


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_small_integer_ids_give_the_int64_results(gpt2, dtype):
    with torch.no_grad():
        assert torch.equal(gpt2(IDS.to(dtype)).logits, gpt2(IDS).logits)
    assert torch.equal(gpt2.generate(IDS.to(dtype), max_new_tokens=3), gpt2.generate(IDS, max_new_tokens=3))


# -- the forward's inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"position_ids": torch.tensor([[0, 1, 2, 40]])}, r"position_ids must lie in \[0, 32\)"),
    ({"position_ids": torch.tensor([[0, 1, 2]])}, r"position_ids has shape \[1, 3\]"),
    ({"token_type_ids": torch.tensor([[0, 1, 2, 200]])}, r"token_type_ids must lie in \[0, 96\)"),
    ({"token_type_ids": torch.tensor([[0, 1]])}, r"token_type_ids has shape \[1, 2\]"),
    ({"attention_mask": torch.ones(1, 5)}, r"attention_mask has shape \[1, 5\]"),
])
def test_bad_forward_inputs_are_named(gpt2, kwargs, message):
    with torch.no_grad():
        raises(ValueError, message, gpt2, IDS, **kwargs)


@pytest.mark.parametrize("family", ["GPT2LMHeadModel", "OpenAIGPTLMHeadModel"])
def test_a_mask_given_second_is_named(family):
    """transformers' OpenAI GPT takes the attention mask as its second argument, ours the cache
    (the 2019 API): model(ids, mask) ended in a raw IndexError."""
    config = (models.GPT2Config if family.startswith("GPT2") else models.OpenAIGPTConfig)(**TINY)
    model = getattr(models, family)(config).eval()
    with torch.no_grad():
        for mask in (torch.ones_like(IDS), torch.ones(2, 4, dtype=torch.long)):
            raises(ValueError, r"past \(the second argument\) must be the cache a previous call returned, got a tensor "
                   r"of shape \[\d, 4\]; pass an attention mask by keyword", model, IDS, mask)


def test_a_0d_input_is_named(gpt2):
    with torch.no_grad():
        raises(ValueError, "0-D tensor", gpt2, torch.tensor(3))


@pytest.mark.parametrize("shape", [(0, 5), (1, 0), (0, 0), (0,)])
@pytest.mark.parametrize("grad", [False, True])
def test_an_input_without_tokens_is_named(gpt2, shape, grad):
    """An empty batch or row failed deep inside the blocks ("cannot reshape tensor of 0
    elements"), as it does in transformers."""
    with torch.set_grad_enabled(grad):
        raises(ValueError, rf"input_ids has shape \[{', '.join(map(str, shape))}\]: give at least one token",
               gpt2, torch.zeros(shape, dtype=torch.long))
        raises(ValueError, r"inputs_embeds has shape \[0, 5\]: give at least one token",
               gpt2, inputs_embeds=torch.zeros(0, 5, TINY["n_embd"]))


@pytest.mark.parametrize("mc_token_ids, message", [
    (torch.tensor([[0, 9]]), r"mc_token_ids must lie in \[0, 3\)"),
    (torch.tensor([[-1, 0]]), r"mc_token_ids must lie in \[0, 3\)"),
    (torch.tensor([0, 1, 2]), r"mc_token_ids has shape \[3\]; it must be \[1, 2\]"),
])
def test_bad_choice_positions_are_named(double_heads, mc_token_ids, message):
    with torch.no_grad():
        raises(ValueError, message, double_heads, torch.tensor([[[1, 2, 3], [4, 5, 6]]]), mc_token_ids)


# -- configs and keywords ------------------------------------------------------------------------------

def test_a_huge_feed_forward_is_blamed_on_n_inner():
    raises(ValueError, r"GPT2Config\.n_inner=1000000000000 makes the weights need", models.GPT2LMHeadModel.from_config,
           models.GPT2Config(n_inner=10**12))


def test_a_huge_label_count_is_refused_before_allocating():
    raises(ValueError, r"num_labels=1000000000000 makes the weights need",
           models.GPT2ForSequenceClassification.from_config, models.GPT2Config(**TINY, num_labels=10**12))


def test_id2label_must_be_a_mapping():
    raises(ValueError, "id2label must map ids to labels, got a list", models.GPT2Config, id2label=["a", "b"])
    raises(ValueError, "id2label must map integer ids", models.GPT2Config, id2label={"x": "a"})


@pytest.mark.parametrize("keyword, hint", [("quantization", ""), ("load_in_8bit", ""), ("n_layers", "n_layer"),
                                           ("torch_dtyp", "torch_dtype")])
def test_unknown_keywords_are_refused_with_close_matches(tmp_path, keyword, hint):
    models.GPT2LMHeadModel(models.GPT2Config(**TINY)).save_pretrained(tmp_path)
    error = raises(TypeError, f"unexpected keyword argument '{keyword}'", models.GPT2LMHeadModel.from_pretrained,
                   tmp_path, **{keyword: 1})
    assert hint in str(error)
    raises(TypeError, f"'{keyword}'", models.GPT2Config.from_pretrained, tmp_path, **{keyword: 1})


@pytest.mark.parametrize("keyword, hint", [("num_beam", "did you mean 'num_beams'"), ("stop_strings", "no beam search"),
                                           ("max_new_token", "did you mean 'max_new_tokens'")])
def test_generate_refuses_options_it_does_not_take_saying_which_it_takes(gpt2, keyword, hint):
    """transformers' options gave Python's bare "unexpected keyword argument" or "missing input_ids"."""
    error = raises(TypeError, f"GPT2LMHeadModel.generate got unexpected keyword argument '{keyword}'", gpt2.generate,
                   **{"input_ids": IDS, keyword: 2})
    assert hint in str(error) and "top_p" in str(error)
    raises(TypeError, "generate needs input_ids", gpt2.generate, max_new_tokens=2)
    raises(TypeError, "got both input_ids and inputs", gpt2.generate, IDS, inputs=IDS)


def test_generate_takes_transformers_options_where_they_change_nothing(gpt2):
    """Pasted transformers code passes use_cache=True, num_beams=1, output_scores=False and
    inputs=: all were refused as unknown. At values that would change the output they are refused
    by name (they would be ignored)."""
    numpy = require("numpy")
    want = gpt2.generate(IDS, max_new_tokens=3)
    neutral = dict(use_cache=True, num_beams=1, early_stopping=True, no_repeat_ngram_size=0, min_new_tokens=0,
                   output_scores=False, return_dict_in_generate=False, length_penalty=1.0, bad_words_ids=None)
    assert torch.equal(gpt2.generate(inputs=IDS, max_new_tokens=3, **neutral), want)
    assert torch.equal(gpt2.generate(input_ids=IDS, inputs=None, max_new_tokens=3, use_cache=None, output_scores=None,
                                     num_beams=numpy.int64(1)), want)  # transformers' defaults, NumPy values
    for name, value in [("num_beams", 5), ("no_repeat_ngram_size", 2), ("return_dict_in_generate", True),
                        ("output_scores", True), ("use_cache", "yes"), ("output_scores", numpy.array([0, 0])),
                        ("num_beams", True)]:
        raises(ValueError, re.escape(f"{name}={value!r}: generate does not do that: it decodes greedily or samples"),
               gpt2.generate, IDS, max_new_tokens=3, **{name: value})


def test_entrypoints_refuse_unknown_keywords(tmp_path):
    hub = repo_module("hubconfs.gpt2_hubconf")
    models.GPT2LMHeadModel(models.GPT2Config(**TINY)).save_pretrained(tmp_path)
    raises(TypeError, "'quantization'", hub.gpt2LMHeadModel, str(tmp_path), quantization="int8")
    raises(TypeError, "'load_in_8bit'", hub.gpt2Model, "gpt2", pretrained=False, load_in_8bit=True)
    raises(TypeError, "'n_layers'.*n_layer", hub.gpt2Config, "gpt2", n_layers=3)
    # the tokenizers' before any download (the hub here is a closed port: a download would fail otherwise)
    raises(TypeError, "'device_map'", hub.gpt2Tokenizer, "gpt2", device_map="cuda")
    raises(TypeError, "'add_prefix_spaces'.*add_prefix_space", hub.gpt2Tokenizer, "gpt2", add_prefix_spaces=True)
    raises(TypeError, "'use_spacey'.*use_spacy", repo_module("hubconfs.gpt_hubconf").openAIGPTTokenizer, "openai-gpt",
           use_spacey=False)


@pytest.mark.parametrize("kwargs, kind, message", [
    ({"device_map": {"transformer.h.0": 0, "lm_head": "cpu"}}, ValueError, "places parts of the model on 2 devices"),
    ({"device_map": "gpu"}, ValueError, "device_map='gpu' is not a device"),
    ({"device_map": True}, TypeError, "device_map must be a device"),
    ({"device_map": "cuda:99"}, ValueError, r"device_map='cuda:99', but this PyTorch sees (no|\d+) cuda device"),
    ({"device_map": {"": "cuda:99"}}, ValueError, r"device_map\[''\]='cuda:99', but this PyTorch sees (no|\d+) cuda"),
    ({"device_map": "99"}, ValueError, r"device_map=99, but this PyTorch sees (no|\d+) cuda device"),  # a GPU's index
    ({"device_map": "meta"}, ValueError, "device_map='meta' would load no weights"),
    ({"device_map": 0, "quantize": "int8"}, ValueError, "quantize='int8' is for the CPU; device_map=0 asks for cuda:0"),
    ({"device_map": "cuda", "quantize": "int9"}, ValueError, "quantize must be one of 'int8', 'int4', got 'int9'"),
    ({"torch_dtype": "float16", "quantize": "int8"}, ValueError,  # was refused after the download
     "quantize needs a float32 or bfloat16 model on the CPU, not torch.float16"),
])
def test_bad_devices_are_named_before_any_download(kwargs, kind, message):
    entry = repo_module("hubconfs.gpt2_hubconf").gpt2LMHeadModel
    raises(kind, message, models.GPT2LMHeadModel.from_pretrained, "no-such-owner/no-such-model", **kwargs)
    for pretrained in (True, False):
        raises(kind, message, entry, "no-such-owner/no-such-model", pretrained=pretrained, **kwargs)


@pytest.mark.parametrize("kwargs, kind, message", [
    ({"revision": 5}, TypeError, "revision must be str or None, got int"),  # was: "'int' object is not iterable"
    ({"cache_dir": 5}, TypeError, "cache_dir must be str or PathLike or None, got int"),
    ({"force_download": "yes"}, TypeError, "force_download must be bool, got str"),
    ({"config": {"n_layer": 1}}, TypeError, "config must be a GPT2Config or a path to its config.json, got dict"),
    ({"config": "openai-gpt-config"}, ValueError, r"config is of type OpenAIGPTConfig \(openai-gpt\); this model takes "
                                                  "a GPT2Config"),
    ({"pretrained": "no"}, TypeError, "pretrained must be True or False, got 'no'"),  # was: True, a download
    ({"token": 5}, TypeError, "token must be str or bool or None, got int"),
])
def test_bad_loading_arguments_are_named_before_any_download(kwargs, kind, message):
    """Each failed later in a message that named something else (the checkpoint, an iterable), or
    not at all."""
    if kwargs.get("config") == "openai-gpt-config":
        kwargs = {"config": models.OpenAIGPTConfig(**TINY)}
    entry = repo_module("hubconfs.gpt2_hubconf").gpt2LMHeadModel
    if "pretrained" not in kwargs:
        raises(kind, message, models.GPT2LMHeadModel.from_pretrained, "no-such-owner/no-such-model", **kwargs)
    for pretrained in (True, False) if "pretrained" not in kwargs else (kwargs.pop("pretrained"),):
        raises(kind, message, entry, "no-such-owner/no-such-model", pretrained=pretrained, **kwargs)


def test_transformers_own_config_is_taken(tmp_path):
    """config=transformers.GPT2Config(...) was refused with "must be a GPT2Config, got GPT2Config"."""
    transformers = require("transformers")
    theirs = transformers.GPT2Config(**TINY)
    entry = repo_module("hubconfs.gpt2_hubconf").gpt2LMHeadModel
    fields = lambda config: {name: getattr(config, name) for name in models.GPT2Config.field_names()  # noqa: E731
                             if name not in ("id2label", "label2id")}  # transformers fills in two labels
    assert fields(entry("gpt2", pretrained=False, config=theirs).config) == fields(models.GPT2Config(**TINY))
    models.GPT2LMHeadModel(models.GPT2Config(**TINY)).save_pretrained(tmp_path)
    loaded = models.GPT2LMHeadModel.from_pretrained(tmp_path, config=theirs)
    assert loaded.config.n_layer == TINY["n_layer"]
    raises(ValueError, r"OpenAIGPTConfig \(openai-gpt\); this model takes a GPT2Config", entry, "gpt2",
           pretrained=False, config=transformers.OpenAIGPTConfig())
    # the constructor said "needs a GPT2Config, got GPT2Config"
    raises(TypeError, r"needs this repository's GPT2Config, got a GPT2Config from transformers: convert it with "
           r"GPT2Config.from_dict\(config.to_dict\(\)\)", models.GPT2LMHeadModel, theirs)
    built = models.GPT2LMHeadModel(models.GPT2Config.from_dict(theirs.to_dict()))
    assert fields(built.config) == fields(models.GPT2Config(**TINY))
    raises(TypeError, "GPT2LMHeadModel needs this repository's GPT2Config, got a dict$", models.GPT2LMHeadModel, dict(TINY))


# -- checkpoint files ----------------------------------------------------------------------------------

def safetensors_file(path: Path, header: bytes, data: bytes = b"") -> Path:
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize("header", [
    b'{"w": {"dtype": "F32", "shape": [-2, -3], "data_offsets": [0, 24]}}',  # negative, positive product
    b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1' + b"0" * 5000 + b']}}',  # a 5000-digit offset
    b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested 100,000 deep
    b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "v": {"dtype": "F32", "shape": [2], '
    b'"data_offsets": [0, 8]}}',  # two tensors over the same bytes
], ids=["negative dimensions", "5000-digit offset", "100000 deep", "overlapping"])
def test_malformed_safetensors_headers_name_the_file(tmp_path, header):
    path = safetensors_file(tmp_path / "model.safetensors", header, bytes(24))
    raises(ValueError, f"{path} is not a valid safetensors file", checkpoint.load_weights, path)


def test_a_protocol_0_pickle_and_an_empty_bin_are_reported_as_torch_files(tmp_path):
    legacy = tmp_path / "pytorch_model.bin"
    legacy.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=0))
    raises(ValueError, "PyTorch weights file|Python objects besides tensors", checkpoint.load_weights, legacy)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    raises(ValueError, f"{empty} could not be read as a PyTorch weights file", checkpoint.load_weights, empty)


def test_files_written_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        models.GPT2LMHeadModel(models.GPT2Config(**TINY)).save_pretrained(tmp_path)
    finally:
        os.umask(previous)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# -- OpenAI's release files ----------------------------------------------------------------------------

def test_hparams_that_are_not_an_object_are_named(tmp_path):
    folder = release_copy(tmp_path)
    (folder / "hparams.json").write_text("[1, 2]")
    raises(ValueError, "hparams.json holds a JSON list", models.GPT2LMHeadModel.from_pretrained, folder)


def test_a_checkpoint_file_that_is_not_text_is_named(tmp_path):
    folder = release_copy(tmp_path)
    (folder / "checkpoint").write_bytes(b'model_checkpoint_path: "\xff\xfe"\n')
    raises(ValueError, "`checkpoint` file is not UTF-8", models.GPT2LMHeadModel.from_pretrained, folder)


def test_gpt1_shapes_whose_product_overflows_are_refused(tmp_path):
    folder = release_copy(tmp_path, "gpt1")
    shapes = json.loads((folder / "params_shapes.json").read_text())
    shapes[0] = [2**32, 2**32]  # 2**64 values: wraps to 0 in int64
    (folder / "params_shapes.json").write_text(json.dumps(shapes))
    error = raises(ValueError, "params_shapes.json describes", models.OpenAIGPTLMHeadModel.from_pretrained, folder)
    assert "describes 0" not in str(error)


def test_a_tensor_name_that_is_not_utf8_is_named(tmp_path):
    """A TF index whose key has a byte that is not UTF-8, in a block whose CRC is still right."""
    tf = repo_module("models.tf_checkpoint")
    crc = repo_module("models.crc32c")
    folder = release_copy(tmp_path)
    index = folder / "model.ckpt.index"
    data = bytearray(index.read_bytes())
    footer = bytes(data[-tf.FOOTER_SIZE:])
    _, pos = tf._varint(footer, 0)
    _, pos = tf._varint(footer, pos)
    index_offset, pos = tf._varint(footer, pos)
    index_size, _ = tf._varint(footer, pos)
    where = bytes(data).index(b"model/h0") + 6  # keys share prefixes: the first key is whole
    for _, handle in tf._block_entries(tf._block(bytes(data), index_offset, index_size, "index"), "index"):
        offset, at = tf._varint(handle, 0)
        size, _ = tf._varint(handle, at)
        if offset <= where < offset + size:
            data[where] = 0xFF  # model/\xff0/attn/...
            contents = bytes(data[offset:offset + size + 1])  # the block and its type byte
            data[offset + size + 1:offset + size + 5] = crc.mask(crc.crc32c(contents)).to_bytes(4, "little")
    index.write_bytes(bytes(data))
    raises(ValueError, r"a tensor name is not UTF-8", models.GPT2LMHeadModel.from_pretrained, folder)


@pytest.mark.parametrize("keep, kind, message", [
    (-1, errors.InvalidArgumentError, "logits_to_keep must be >= 0"),
    (1.5, errors.ArgumentTypeError, "logits_to_keep must be an int, got float"),
    (True, errors.ArgumentTypeError, "logits_to_keep must be an int, got bool"),
])
def test_bad_logits_to_keep_is_named(gpt2, keep, kind, message):
    with pytest.raises(kind, match=message):
        gpt2(torch.ones(1, 3, dtype=torch.long), logits_to_keep=keep)


def test_a_loss_with_logits_to_keep_is_refused(gpt2):
    x = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(errors.InvalidArgumentError, match="a loss needs every position's logits"):
        gpt2(x, labels=x, logits_to_keep=1)


def test_transformers_loading_options_and_use_cache_are_taken_where_they_change_nothing(tmp_path):
    """Pasted transformers code passes attn_implementation="eager", low_cpu_mem_usage=True,
    use_safetensors=True, trust_remote_code=True to from_pretrained (refused as unknown), and
    use_cache=True to every head (token classification and question answering crashed with
    "got multiple values for keyword argument 'use_cache'" and the whole module's repr)."""
    models.GPT2LMHeadModel(models.GPT2Config(**TINY)).save_pretrained(tmp_path)
    plain = models.GPT2LMHeadModel.from_pretrained(tmp_path)
    for options in ({"attn_implementation": "eager"}, {"attn_implementation": "sdpa", "low_cpu_mem_usage": True},
                    {"use_safetensors": True, "trust_remote_code": True}):
        loaded = models.GPT2LMHeadModel.from_pretrained(tmp_path, **options)
        assert torch.equal(loaded(IDS).logits, plain(IDS).logits)
    for name, value in (("attn_implementation", "flash_attention_2"), ("use_safetensors", False)):
        raises(ValueError, f"{name}={value!r}: GPT2LMHeadModel.from_pretrained has no such choice",
               models.GPT2LMHeadModel.from_pretrained, tmp_path, **{name: value})
    raises(ValueError, "low_cpu_mem_usage='yes': GPT2LMHeadModel.from_pretrained takes True or False",
           models.GPT2LMHeadModel.from_pretrained, tmp_path, low_cpu_mem_usage="yes")
    unset = {"low_cpu_mem_usage": None, "trust_remote_code": None, "attn_implementation": None}  # transformers' defaults
    assert torch.equal(models.GPT2LMHeadModel.from_pretrained(tmp_path, **unset)(IDS).logits, plain(IDS).logits)
    hub = repo_module("hubconfs.gpt2_hubconf")
    built = hub.gpt2LMHeadModel(config=plain.config, pretrained=False, attn_implementation="sdpa")  # was: a config error
    assert type(models.GPT2LMHeadModel.from_config(plain.config, attn_implementation="eager")) is type(built)
    raises(TypeError, "from_config got unexpected keyword argument 'n_layers'", models.GPT2LMHeadModel.from_config,
           plain.config, n_layers=2)
    for head in (models.GPT2ForTokenClassification, models.GPT2ForQuestionAnswering):
        model = head.from_pretrained(tmp_path).eval()
        assert torch.equal(model(IDS, use_cache=True)[0], model(IDS)[0])
