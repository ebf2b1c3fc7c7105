"""Loading and saving checkpoints in the layouts people have on disk."""

import json
import logging
import os

import pytest
import torch
from conftest import require, TINY, make_hf_checkpoint, models, peak_script, repo_module

transformers = require("transformers")
checkpoint = repo_module("models.checkpoint")
CheckpointError = models.CheckpointError


def tokens(*shape):
    return torch.randint(1, TINY["vocab_size"], shape)


def test_save_pretrained_loads_in_hugging_face_and_reloads_bit_exactly(tmp_path, hf_checkpoint):
    ours = models.GPT2LMHeadModel.from_pretrained(hf_checkpoint)
    ours.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == ["config.json", "model.safetensors"]
    again = models.GPT2LMHeadModel.from_pretrained(tmp_path / "saved")
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert again.lm_head.weight is again.transformer.wte.weight
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "saved").eval()
    x = tokens(2, 7)
    with torch.no_grad():
        assert torch.allclose(theirs(x).logits, ours(x).logits, atol=1e-5)
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"


def test_our_safetensors_matches_the_reference_library(tmp_path):
    safetensors_torch = require("safetensors.torch")
    tensors = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64),
               "c": torch.randn(4, dtype=torch.float64).to(torch.bfloat16), "empty": torch.empty(0, 3)}
    checkpoint.write_safetensors(tensors, tmp_path / "ours.safetensors")
    theirs = safetensors_torch.load_file(tmp_path / "ours.safetensors")
    safetensors_torch.save_file(tensors, tmp_path / "theirs.safetensors")
    mine = checkpoint.read_safetensors(tmp_path / "theirs.safetensors")
    for name, tensor in tensors.items():
        assert torch.equal(theirs[name], tensor) and torch.equal(mine[name], tensor), name
        assert mine[name].dtype == tensor.dtype


def test_original_bin_layout_with_legacy_buffers_and_no_prefix(tmp_path, hf_checkpoint):
    """The 2019 gpt2 checkpoint: pytorch_model.bin, keys without `transformer.`, attn.bias buffers."""
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_checkpoint).eval()
    state = {k.removeprefix("transformer."): v.clone() for k, v in reference.state_dict().items() if k != "lm_head.weight"}
    for i in range(TINY["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, TINY["n_positions"], TINY["n_positions"]).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    folder = tmp_path / "legacy"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text((hf_checkpoint / "config.json").read_text())
    x = tokens(1, 9)
    for cls in (models.GPT2LMHeadModel, models.GPT2Model):
        ours = cls.from_pretrained(folder)
        with torch.no_grad():
            expected = reference(x) if cls is models.GPT2LMHeadModel else reference.transformer(x)
            got = ours(x)
        assert torch.allclose(expected[0], got[0], atol=1e-5)


def test_head_from_a_base_checkpoint_is_initialised_and_named(tmp_path, caplog):
    base = make_hf_checkpoint(tmp_path / "base", "GPT2Model")
    with caplog.at_level(logging.WARNING):
        model = models.GPT2DoubleHeadsModel.from_pretrained(base)
    assert "multiple_choice_head.summary.weight" in caplog.text
    weight = model.multiple_choice_head.summary.weight
    assert not weight.is_meta and torch.isfinite(weight).all() and weight.std() > 0
    assert 0.01 < weight.std() < 0.03  # initializer_range
    assert model.lm_head.weight is model.transformer.wte.weight
    reference = transformers.GPT2Model.from_pretrained(base).eval()
    x = tokens(1, 2, 6)
    with torch.no_grad():
        assert torch.allclose(model.transformer(x).last_hidden_state, reference(x.view(2, 6)).last_hidden_state.view(1, 2, 6, -1), atol=1e-5)


@pytest.mark.parametrize("requested, expected", [
    (torch.bfloat16, torch.bfloat16), ("float16", torch.float16), ("torch.bfloat16", torch.bfloat16),
    (None, torch.float32), ("auto", torch.float16),
])
def test_torch_dtype(tmp_path, requested, expected):
    reference = models.GPT2LMHeadModel.from_config(models.GPT2Config(**TINY), torch_dtype=torch.float16)
    reference.save_pretrained(tmp_path)
    model = models.GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype=requested)
    assert {p.dtype for p in model.parameters()} == {expected}
    with torch.no_grad():
        assert torch.isfinite(model(tokens(1, 5)).logits.float()).all()
    with pytest.raises(ValueError, match="torch_dtype"):
        models.GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype="int8")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_never_runs(tmp_path, hf_checkpoint):
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text((hf_checkpoint / "config.json").read_text())
    torch.save({"wte.weight": torch.zeros(2), "evil": _Payload(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(models.UnsafeCheckpointError) as info:
        models.GPT2LMHeadModel.from_pretrained(folder)
    assert not marker.exists()
    assert "weights_only=False" not in str(info.value) and "refused unread" in str(info.value)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "file not fully covered"),
    (lambda data: data[:5], "header too small"),
    (lambda data: b"<html>404 Not Found</html>" + b" " * 100, "header too large"),
    (lambda data: (20).to_bytes(8, "little") + b"{not json" + b" " * 11 + data[28:], "header"),
])
def test_damaged_safetensors_say_how_to_fix_it(tmp_path, hf_checkpoint, damage, message):
    path = hf_checkpoint / "model.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as info:
        models.GPT2LMHeadModel.from_pretrained(hf_checkpoint)
    assert str(path) in str(info.value) and "not a valid safetensors file" in str(info.value)
    assert "force_download=True" in str(info.value)


def test_overlapping_tensors_are_refused_naming_the_file(tmp_path):
    """Two tensors over the same bytes: an in-place change of one would change the other."""
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path = tmp_path / "overlap.safetensors"
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + bytes(8))
    with pytest.raises(CheckpointError, match=f"{path}.*invalid offset"):
        checkpoint.load_weights(path)


@pytest.mark.parametrize("header_length", [0x80, 0x4B50])  # starts with \x80, with "PK"
def test_extensionless_safetensors_is_never_taken_for_a_pickle(tmp_path, header_length):
    """A cached file without an extension whose header length starts with a pickle's or a zip's
    first byte (one real checkpoint in 32 or so) is still read as safetensors."""
    tensors = {"w": torch.arange(6, dtype=torch.float32).view(2, 3)}
    checkpoint.write_safetensors(tensors, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = data[8:8 + length].rstrip(b" ")
    padded = header + b" " * (header_length - len(header))
    blob = tmp_path / "0123abcd"  # a cache blob: no extension
    blob.write_bytes(header_length.to_bytes(8, "little") + padded + data[8 + length:])
    assert blob.read_bytes()[:1] in (b"\x80", b"P")
    assert checkpoint.weights_format(str(blob)) == "safetensors"
    assert torch.equal(checkpoint.load_weights(blob)["w"], tensors["w"])


def test_damaged_bin_is_a_clear_error(tmp_path, hf_checkpoint):
    torch.save(transformers.GPT2LMHeadModel.from_pretrained(hf_checkpoint).state_dict(), tmp_path / "w.bin")
    data = (tmp_path / "w.bin").read_bytes()
    (tmp_path / "w.bin").write_bytes(data[: len(data) // 3])
    (tmp_path / "config.json").write_text((hf_checkpoint / "config.json").read_text())
    with pytest.raises(CheckpointError, match="force_download=True"):
        models.GPT2LMHeadModel.from_pretrained(tmp_path / "w.bin")


def test_mismatched_and_missing_weights_name_the_weight(tmp_path, hf_checkpoint):
    with pytest.raises(CheckpointError, match=r"'transformer\.wpe\.weight' has shape \[32, 32\].*\[64, 32\]"):
        models.GPT2LMHeadModel.from_pretrained(hf_checkpoint, n_positions=64)
    state = checkpoint.read_safetensors(hf_checkpoint / "model.safetensors")
    del state["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(CheckpointError, match=r"lacks weights the model needs: transformer\.h\.1\.mlp\.c_fc\.bias"):
        models.GPT2LMHeadModel.from_pretrained(hf_checkpoint, state_dict=state)


def test_paths_config_and_state_dict_keywords(tmp_path, hf_checkpoint):
    by_folder = models.GPT2LMHeadModel.from_pretrained(hf_checkpoint)
    by_file = models.GPT2LMHeadModel.from_pretrained(hf_checkpoint / "model.safetensors")
    by_state = models.GPT2LMHeadModel.from_pretrained(hf_checkpoint, state_dict=by_folder.state_dict())
    config = models.GPT2Config.from_pretrained(hf_checkpoint, num_labels=4)
    by_config = models.GPT2LMHeadModel.from_pretrained(hf_checkpoint, config=config)
    x = tokens(1, 4)
    with torch.no_grad():
        for other in (by_file, by_state, by_config):
            assert torch.equal(by_folder(x).logits, other(x).logits)
    assert by_config.config.num_labels == 4
    assert not {p.data_ptr() for p in by_folder.parameters()} & {p.data_ptr() for p in by_state.parameters()}
    with torch.no_grad():  # the model built from another's state dict is its own (it shared every weight)
        before = by_folder(x).logits
        by_state.transformer.h[0].mlp.c_fc.weight.zero_()
        assert torch.equal(by_folder(x).logits, before)


def test_a_name_or_missing_path_is_a_clear_error(tmp_path, monkeypatch):
    download = repo_module("download")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(download.CheckpointNotFoundError, match=r"gpt2-xl/resolve/main/config\.json is not in the cache"):
        models.GPT2LMHeadModel.from_pretrained("gpt2-xl")
    with pytest.raises(download.CheckpointNotFoundError, match="not a local file or directory, a checkpoint name"):
        models.GPT2LMHeadModel.from_pretrained("no such thing!")
    with pytest.raises(download.CheckpointNotFoundError, match="provides no model.safetensors or model.safetensors.index.json or pytorch_model.bin"):
        models.GPT2LMHeadModel.from_pretrained(tmp_path, config=models.GPT2Config(**TINY))


PEAK_RSS = """
    models = importlib.import_module(package + ".models")
    # Warm up: torch's first operations set up thread pools and kernels, which is not loading.
    tiny = models.GPT2Config(vocab_size=64, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    models.GPT2LMHeadModel.from_config(tiny).save_pretrained(sys.argv[2] + "/tiny")
    with torch.no_grad():
        models.GPT2LMHeadModel.from_pretrained(sys.argv[2] + "/tiny", torch_dtype=getattr(torch, sys.argv[3]))(
            torch.tensor([[1, 2]])).logits.max()
    growth = growth_from_here()
    model = models.GPT2LMHeadModel.from_pretrained(sys.argv[2], torch_dtype=getattr(torch, sys.argv[3]))
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        for p in model.parameters():
            p.max()  # touch every weight
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(weights, growth())
"""


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("layout", ["save_pretrained", "torch.save", "legacy buffers"])
def test_peak_memory_is_one_copy_of_the_weights(tmp_path, dtype, layout):
    """Also for a ``torch.save`` state dict, whose tied embedding is one storage under two names (it
    was copied twice), and for a checkpoint carrying the causal-mask buffers old ones have (copied,
    then dropped)."""
    config = models.GPT2Config(vocab_size=50257, n_positions=256, n_embd=512, n_layer=6, n_head=8)
    model = models.GPT2LMHeadModel.from_config(config)  # ~120 MB in float32, 103 MB of it the embedding
    if layout == "torch.save":
        config.save_pretrained(tmp_path)
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    elif layout == "legacy buffers":
        config.save_pretrained(tmp_path)
        state = {name: t.contiguous() for name, t in model.state_dict().items() if name != "lm_head.weight"}
        state.update({f"transformer.h.{i}.attn.bias": torch.ones(1, 1, 2048, 2048) for i in range(6)})  # 96 MB
        require("safetensors.torch").save_file(state, tmp_path / "model.safetensors")
    else:
        model.save_pretrained(tmp_path)
    weights, grown = peak_script(tmp_path, PEAK_RSS, str(tmp_path), dtype)
    assert 0.9 * weights <= grown <= 1.1 * weights + 16 * 2**20, (grown / 2**20, weights / 2**20)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_a_tied_checkpoint_loaded_untied_gives_the_head_memory_of_its_own(tmp_path, dtype):
    """A ``torch.save`` of a tied model stores the embedding once under two names; loaded with
    ``tie_word_embeddings=False`` the two weights started equal but shared memory, so a training
    step on the head moved the embedding too."""
    config = models.GPT2Config(**TINY)
    torch.save(models.GPT2LMHeadModel.from_config(config).state_dict(), tmp_path / "tied.bin")
    untied = models.GPT2LMHeadModel.from_pretrained(tmp_path / "tied.bin", config=config.replace(tie_word_embeddings=False),
                                                    torch_dtype=dtype)
    head, embedding = untied.lm_head.weight, untied.transformer.wte.weight
    assert head.dtype == embedding.dtype == (dtype or torch.float32)
    assert torch.equal(head, embedding) and head.data_ptr() != embedding.data_ptr()
    before = embedding.detach().clone()
    untied.train()
    untied(tokens(1, 5), labels=tokens(1, 5)).loss.backward()
    torch.optim.SGD([head], lr=1.0).step()
    assert torch.equal(embedding, before) and not torch.equal(head, before)
    tied = models.GPT2LMHeadModel.from_pretrained(tmp_path / "tied.bin", config=config, torch_dtype=dtype)
    assert tied.lm_head.weight is tied.transformer.wte.weight


def test_a_state_dict_converts_each_stored_tensor_once(monkeypatch):
    """A tied embedding given twice in a state dict (one tensor, two names) is converted to
    ``torch_dtype`` once, not once per name."""
    loading = repo_module("models.loading")
    conversions = []
    copy = loading.copy_in_huge_pages
    monkeypatch.setattr(loading, "copy_in_huge_pages", lambda t, dtype: conversions.append(tuple(t.shape)) or copy(t, dtype))
    state = models.GPT2LMHeadModel.from_config(models.GPT2Config(**TINY)).state_dict()
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    model = models.GPT2LMHeadModel.from_pretrained(None, config=models.GPT2Config(**TINY), state_dict=state,
                                                   torch_dtype=torch.bfloat16)
    assert model.lm_head.weight is model.transformer.wte.weight and model.lm_head.weight.dtype == torch.bfloat16
    assert len(conversions) == len({t.data_ptr() for t in state.values() if t.is_floating_point()}), conversions
