import os
import json

import pytest
import torch
from conftest import require, TINY, models, repo_module

GPT2Config = models.GPT2Config
ConfigError = models.ConfigError


def test_defaults_are_gpt2_small():
    config = GPT2Config()
    assert (config.vocab_size, config.n_positions, config.n_embd, config.n_layer, config.n_head) == (50257, 1024, 768, 12, 12)
    assert config.activation_function == "gelu_new" and config.n_inner is None and config.inner_dim == 3072
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.1, 0.1, 0.1)
    assert config.layer_norm_epsilon == 1e-5 and config.initializer_range == 0.02
    assert config.bos_token_id == config.eos_token_id == 50256
    # Hugging Face's generic names read the same fields
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers, config.max_position_embeddings) == (768, 12, 12, 1024)


@pytest.mark.parametrize("name, shape", [
    ("gpt2", (768, 12, 12)), ("gpt2-medium", (1024, 24, 16)), ("gpt2-large", (1280, 36, 20)),
    ("gpt2-xl", (1600, 48, 25)), ("distilgpt2", (768, 6, 12)),
])
def test_presets(name, shape):
    config = GPT2Config.from_preset(name)
    assert (config.n_embd, config.n_layer, config.n_head) == shape


@pytest.mark.parametrize("overrides, field", [
    ({"n_embd": 30, "n_head": 4}, "n_embd"),
    ({"n_layer": 0}, "n_layer"),
    ({"vocab_size": -5}, "vocab_size"),
    ({"n_head": 2.0}, "n_head"),
    ({"n_positions": "1024"}, "n_positions"),
    ({"n_layer": True}, "n_layer"),
    ({"n_inner": 0}, "n_inner"),
    ({"attn_pdrop": 1.5}, "attn_pdrop"),
    ({"layer_norm_epsilon": 0}, "layer_norm_epsilon"),
    ({"activation_function": "gelu2"}, "activation_function"),
    ({"summary_type": "attn"}, "summary_type"),
    ({"pad_token_id": -1}, "pad_token_id"),
    ({"scale_attn_weights": "yes"}, "scale_attn_weights"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        GPT2Config(**{**TINY, **overrides})


def test_too_big_for_memory_fails_before_allocating(monkeypatch):
    config = GPT2Config(n_layer=100_000)  # ~700 billion parameters
    allocations = []
    monkeypatch.setattr(torch, "empty", lambda *a, **k: allocations.append(a) or pytest.fail("allocated"))
    with pytest.raises(ValueError, match=r"GPT2Config\.n_layer=100000.*GiB"):
        models.GPT2LMHeadModel(config)


def test_reads_hugging_face_config_json_keeping_unknown_keys(tmp_path):
    original = {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
        "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
        "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
        "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257,
    }
    (tmp_path / "config.json").write_text(json.dumps(original))
    config = GPT2Config.from_pretrained(tmp_path)
    assert config.n_ctx == 1024 and config.extra["task_specific_params"]["text-generation"]["max_length"] == 50
    assert config.task_specific_params == original["task_specific_params"]
    config.save_pretrained(tmp_path / "again")
    written = json.loads((tmp_path / "again" / "config.json").read_text())
    for key, value in original.items():
        assert written[key] == value, key


def test_overrides_and_labels(tmp_path):
    config = GPT2Config(**TINY, id2label={0: "neg", 1: "pos"})
    assert config.num_labels == 2 and config.label2id == {"neg": 0, "pos": 1}
    config.save_pretrained(tmp_path)
    assert GPT2Config.from_pretrained(tmp_path).id2label == {0: "neg", 1: "pos"}
    assert GPT2Config.from_pretrained(tmp_path, num_labels=3).num_labels == 3
    assert GPT2Config.from_pretrained(tmp_path, hidden_size=64, n_head=4).n_embd == 64


def test_wrong_model_type_and_broken_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="bert"):
        GPT2Config.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("<html>404</html>")
    with pytest.raises(ConfigError, match="not a JSON config"):
        GPT2Config.from_pretrained(tmp_path)


def test_defaults_equal_hugging_face_gpt2_config():
    transformers = require("transformers")
    theirs = transformers.GPT2Config().to_dict()
    ours = GPT2Config().to_dict()
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range",
                "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
                "summary_first_dropout", "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
                "reorder_and_upcast_attn", "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings"):
        assert ours[key] == theirs[key], key
    assert GPT2Config().num_labels == transformers.GPT2Config().num_labels == 2
    config = GPT2Config(**TINY)
    assert models.GPT2DoubleHeadsModel(config).config.num_labels == 1 and config.num_labels == 2


def test_a_containers_memory_limit_refuses_a_model_past_it(tmp_path):
    """In a container limited to 1 GiB, GPT-2 XL's 6 GiB of float32 weights would get the process
    killed while allocating; the machine's own memory is no bound there."""
    memory = repo_module("models.memory")
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(f"{1 << 30}\n")
    usage.write_text("0\n")
    cgroups = ((str(limit), str(usage)),)
    xl = GPT2Config(n_embd=1600, n_layer=48, n_head=25)
    with pytest.raises(ValueError, match=r"GPT2Config\.n_layer=48 makes the weights need 5\.8 GiB, more than the 1\.0 GiB"):
        memory.check_fits_in_memory(xl, torch.float32, cgroups)
    memory.check_fits_in_memory(GPT2Config(), torch.float32, cgroups)  # 0.5 GiB fits
    limit.write_text("max\n")  # no limit: the machine's memory bounds it
    assert memory.memory_size(cgroups) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_what_transformers_code_reads_and_calls_on_a_config(tmp_path):
    """update(), to_json_string(use_diff=...), is_encoder_decoder and name_or_path were missing."""
    transformers = require("transformers")
    config = GPT2Config(**TINY)
    config.update({"n_layer": 3, "num_attention_heads": 2, "task_specific_params": {"x": 1}})
    assert (config.n_layer, config.n_head, config.task_specific_params) == (3, 2, {"x": 1})
    with pytest.raises(ValueError, match="n_embd"):
        config.update({"n_head": 5})  # 32 is not a multiple of 5: checked as a new config is
    assert config.n_head == 2  # and left as it was
    diff = json.loads(config.to_json_string(use_diff=True))
    assert diff["n_layer"] == 3 and diff["n_embd"] == TINY["n_embd"] and diff["task_specific_params"] == {"x": 1}
    assert diff["model_type"] == "gpt2" and "layer_norm_epsilon" not in diff and "use_cache" not in diff
    theirs = transformers.GPT2Config(**{**TINY, "n_layer": 3, "n_head": 2})
    assert json.loads(config.to_json_string(use_diff=False)) == config.to_dict()
    assert config.is_encoder_decoder is False and theirs.is_encoder_decoder is False
    models.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    loaded = models.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert loaded.config.name_or_path == str(tmp_path) and GPT2Config().name_or_path == ""


def test_update_takes_labels_as_transformers_does():
    """update() with three new labels kept num_labels=2 and dropped them (the old count beat
    them), and a label2id alone went to extra, where to_dict overrode it."""
    transformers = require("transformers")
    labels = {0: "neg", 1: "neu", 2: "pos"}
    changes = [{"id2label": labels, "label2id": {v: k for k, v in labels.items()}},
               {"label2id": {"a": 0, "b": 1, "c": 2}}, {"num_labels": 3}, {"num_labels": 2}]
    for first in ({}, {"id2label": {0: "x", 1: "y", 2: "z"}}):
        for change in changes:
            ours, theirs = GPT2Config(**first), transformers.GPT2Config(**first)
            ours.update(change)
            theirs.update(change)
            if "label2id" in change and "id2label" not in change:  # transformers keeps them apart; both are read here
                theirs.id2label = {i: label for label, i in change["label2id"].items()}
            assert (ours.num_labels, ours.id2label or ours.labels(), ours.extra) == (theirs.num_labels, theirs.id2label, {}), change
    with pytest.raises(ValueError, match="label2id must map labels to integer ids"):
        GPT2Config().update({"label2id": {"a": "zero"}})


@pytest.mark.parametrize("default, expected", [(torch.float64, torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_loading_under_another_default_dtype(tmp_path, default, expected):
    """Under torch.set_default_dtype(torch.float64), from_pretrained refused a torch_dtype=float64
    it was never given, while from_config built a float64 model: both now take torch's default
    where a model can have it, else float32."""
    models.GPT2LMHeadModel(GPT2Config(**TINY)).save_pretrained(tmp_path)
    before = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        loaded = models.GPT2LMHeadModel.from_pretrained(tmp_path)
        built = models.GPT2LMHeadModel.from_config(GPT2Config(**TINY))
    finally:
        torch.set_default_dtype(before)
    assert loaded.dtype == built.dtype == expected
