"""Checkpoints in shards (an index and its files), as transformers writes them past
max_shard_size: read from a folder and from the hub, written by save_pretrained, and the index
never trusted to reach files elsewhere."""

import json
import os

import pytest
import torch
from conftest import TINY, models, repo_module, require

transformers = require("transformers")
CheckpointError = repo_module("models.checkpoint").CheckpointError
X = torch.tensor([[1, 2, 3, 4]])


def logits(model):
    return model(X).logits


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval()


@pytest.mark.parametrize("safe", [True, False])
def test_transformers_shards_load_and_ours_load_in_transformers(tmp_path, tiny, safe):
    """A folder of shards was 'provides no model.safetensors or pytorch_model.bin'."""
    tiny.save_pretrained(tmp_path / "ours", max_shard_size="20KB", safe_serialization=safe)
    name = "model.safetensors" if safe else "pytorch_model.bin"
    files = sorted(os.listdir(tmp_path / "ours"))
    assert f"{name}.index.json" in files and name not in files and len(files) > 3, files
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    assert torch.allclose(theirs(X).logits, logits(tiny), atol=1e-5)
    theirs.save_pretrained(tmp_path / "theirs", max_shard_size="20KB", safe_serialization=safe)
    assert any(n.endswith(".index.json") for n in os.listdir(tmp_path / "theirs"))  # transformers 5 writes safetensors
    for folder in ("ours", "theirs"):
        assert torch.equal(logits(models.GPT2LMHeadModel.from_pretrained(tmp_path / folder)), logits(tiny)), folder
    index = tmp_path / "ours" / f"{name}.index.json"
    assert torch.equal(logits(models.GPT2LMHeadModel.from_pretrained(index)), logits(tiny))  # the index's path


def test_one_file_unless_a_limit_splits_it_and_a_later_save_replaces_an_earlier(tmp_path, tiny):
    tiny.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = [n for n in os.listdir(tmp_path) if n.startswith("model-")]
    assert len(shards) > 1 and all(n.endswith(f"-of-{len(shards):05d}.safetensors") for n in shards)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards) and index["metadata"]["total_size"] > 20_000
    mine = ["model-00001-of-00002.safetensors\n", "model-\u0660\u0660\u0660\u0660\u0661-of-\u0660\u0660\u0660\u0660\u0662.safetensors"]
    for name in mine:  # not shards' names (a newline; Arabic-Indic digits): a save leaves them alone
        (tmp_path / name).write_bytes(b"the user's")
    other = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval()
    other.save_pretrained(tmp_path)  # one file now: the shards must not outlive it (nor shadow it)
    assert sorted(os.listdir(tmp_path)) == sorted(["config.json", "model.safetensors", *mine])
    assert torch.equal(logits(models.GPT2LMHeadModel.from_pretrained(tmp_path)), logits(other))
    tiny.save_pretrained(tmp_path, max_shard_size=20_000)  # and back: the single file would be found first
    assert "model.safetensors" not in os.listdir(tmp_path)
    assert torch.equal(logits(models.GPT2LMHeadModel.from_pretrained(tmp_path)), logits(tiny))
    tiny.save_pretrained(tmp_path / "rank1", is_main_process=False)
    assert not (tmp_path / "rank1").exists()


@pytest.mark.parametrize("size", ["5 parsecs", 0, -1, "0GB", True, 2.5])
def test_a_bad_max_shard_size_is_named(tmp_path, tiny, size):
    with pytest.raises(ValueError, match="max_shard_size must be a positive number of bytes"):
        tiny.save_pretrained(tmp_path, max_shard_size=size)
    assert not tmp_path.joinpath("config.json").exists()


def test_shard_sizes_read_as_transformers_reads_them():
    """Terabytes and NumPy integers were refused."""
    numpy = require("numpy")
    shard_bytes = repo_module("models.shards").shard_bytes
    assert shard_bytes("5TB") == 5 * 10**12 and shard_bytes("1TiB") == 2**40 and shard_bytes("500MiB") == 500 * 2**20
    assert shard_bytes(numpy.int64(20_000)) == 20_000 and shard_bytes(None) is None


def test_an_index_cannot_reach_outside_its_folder_nor_skip_a_weight(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    index_path = tmp_path / "ckpt" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    (tmp_path / "secret.safetensors").write_bytes((tmp_path / "ckpt" / next(iter(index["weight_map"].values()))).read_bytes())
    for target in ("../secret.safetensors", "/etc/passwd", "model-00001-of-00009.bin"):
        first = next(iter(index["weight_map"]))
        index_path.write_text(json.dumps({**index, "weight_map": {**index["weight_map"], first: target}}))
        with pytest.raises(CheckpointError, match=f"mapped to '{target}', not a .safetensors file beside the index"):
            models.GPT2LMHeadModel.from_pretrained(tmp_path / "ckpt")
    moved = dict(index["weight_map"])
    name = "transformer.h.1.mlp.c_fc.weight"
    moved[name] = next(f for f in set(moved.values()) if f != moved[name])  # a shard that does not hold it
    index_path.write_text(json.dumps({**index, "weight_map": moved}))
    with pytest.raises(CheckpointError, match=f"lacks 1 weights its index puts there \\(first: '{name}'\\)"):
        models.GPT2LMHeadModel.from_pretrained(tmp_path / "ckpt")
    for text in ("{", "[]", '{"weight_map": {}}'):
        index_path.write_text(text)
        with pytest.raises(CheckpointError, match="shard index"):
            models.GPT2LMHeadModel.from_pretrained(tmp_path / "ckpt")


def test_shards_download_from_the_hub(hub, tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    tiny.save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    for name in os.listdir(tmp_path / "ckpt"):
        hub.add("someone/sharded", name, (tmp_path / "ckpt" / name).read_bytes())
    loaded = models.GPT2LMHeadModel.from_pretrained("someone/sharded", cache_dir=tmp_path / "cache")
    assert torch.equal(logits(loaded), logits(tiny))
    offline = models.GPT2LMHeadModel.from_pretrained("someone/sharded", cache_dir=tmp_path / "cache", local_files_only=True)
    assert torch.equal(logits(offline), logits(tiny))


@pytest.mark.parametrize("safe", [True, False])
def test_a_resave_cut_short_never_leaves_one_index_over_two_saves(tmp_path, tiny, safe, monkeypatch):
    """Shards were written over the earlier save's of the same names, one by one, under its
    index: a save that failed at its second shard loaded, silently, as a mix of both models."""
    pretrained = repo_module("models.pretrained")
    tiny.save_pretrained(tmp_path, max_shard_size="20KB", safe_serialization=safe)
    torch.manual_seed(1)
    other = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval()
    writer = "write_safetensors" if safe else "write_torch_pickle"
    real, written = getattr(pretrained, writer), []

    def failing(tensors, path, *args, **kwargs):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(pretrained, writer, failing)
    with pytest.raises(OSError, match="No space left"):
        other.save_pretrained(tmp_path, max_shard_size="20KB", safe_serialization=safe)
    assert not [n for n in os.listdir(tmp_path) if "pending" in n]  # its shards removed
    assert torch.equal(logits(models.GPT2LMHeadModel.from_pretrained(tmp_path)), logits(tiny))  # the earlier save, whole

    monkeypatch.setattr(pretrained, writer, real)
    renamed = []
    real_replace = os.replace

    def killed_while_renaming(source, target):  # the process dies between two shards' renames
        if str(source).endswith(".pending"):
            if renamed:
                raise KeyboardInterrupt
            renamed.append(target)
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_while_renaming)
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(tmp_path, max_shard_size="20KB", safe_serialization=safe)
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(OSError, match="provides no model.safetensors"):  # no index: refused, not mixed
        models.GPT2LMHeadModel.from_pretrained(tmp_path)
    other.save_pretrained(tmp_path, max_shard_size="20KB", safe_serialization=safe)  # the next save tidies up
    assert not [n for n in os.listdir(tmp_path) if "pending" in n]
    assert torch.equal(logits(models.GPT2LMHeadModel.from_pretrained(tmp_path)), logits(other))


def test_safetensors_shards_are_found_before_a_pickle(tmp_path, tiny):
    """transformers looks for safetensors, one file or shards, before any pytorch_model.bin: a
    folder holding shards and a .bin loaded the .bin here (and downloaded a pickle from the hub)."""
    tiny.save_pretrained(tmp_path, max_shard_size="20KB")
    torch.manual_seed(1)
    other = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval()
    torch.save(other.state_dict(), tmp_path / "pytorch_model.bin")
    assert torch.equal(logits(models.GPT2LMHeadModel.from_pretrained(tmp_path)), logits(tiny))
    theirs = logits(transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval())
    # the same weights through another library's operators: equal up to float rounding (bit for bit
    # on AMD machines, within an ulp or two on an Intel Xeon), far from the pickle's weights
    torch.testing.assert_close(theirs, logits(tiny), rtol=1e-6, atol=1e-6)
    assert (theirs - logits(other)).abs().max() > 1e-2
