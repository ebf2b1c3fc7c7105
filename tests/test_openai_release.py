"""OpenAI's original releases (models/openai_release.py, tf_checkpoint.py, crc32c.py), read from
fixtures made by real TensorFlow and numpy (tests/fixtures/openai/make_fixtures.py), compared
with the same weights in Hugging Face transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import OPENAI_FIXTURES, REPO, hubconf, models, release_copy, repo_module, require
from fake_hub import FakeHub

release = repo_module("models.openai_release")
tf_checkpoint = repo_module("models.tf_checkpoint")
crc = repo_module("models.crc32c")
bpe = repo_module("tokenizers.bpe")

FIXTURES = OPENAI_FIXTURES
REFERENCE = np.load(FIXTURES / "reference.npz")
HPARAMS = json.loads((FIXTURES / "gpt2" / "hparams.json").read_text())


def hugging_face_gpt2():
    """transformers' GPT-2 with the fixture's weights, mapped by Hugging Face's names."""
    transformers = require("transformers")
    config = transformers.GPT2Config(vocab_size=HPARAMS["n_vocab"], n_positions=HPARAMS["n_ctx"], n_embd=HPARAMS["n_embd"],
                                     n_head=HPARAMS["n_head"], n_layer=HPARAMS["n_layer"], bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    state = {}
    for key in REFERENCE.files:
        if not key.startswith("gpt2:"):
            continue
        parts = key.removeprefix("gpt2:model/").split("/")  # e.g. h0, attn, c_attn, w
        if parts[0] in ("wte", "wpe"):
            name = f"{parts[0]}.weight"
        else:
            *modules, kind = parts
            modules = [f"h.{m[1:]}" if m[0] == "h" and m[1:].isdigit() else m for m in modules]
            name = ".".join(modules) + (".bias" if kind == "b" else ".weight")
        value = REFERENCE[key]
        state["transformer." + name] = torch.from_numpy(value[0] if value.ndim == 3 else value)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    return model


def hugging_face_gpt1(n_head=2):
    transformers = require("transformers")
    params = [REFERENCE[f"gpt1:{i}"] for i in range(26)]
    config = transformers.OpenAIGPTConfig(vocab_size=params[1].shape[0], n_positions=params[0].shape[0],
                                          n_embd=params[1].shape[1], n_layer=2, n_head=n_head)
    model = transformers.OpenAIGPTLMHeadModel(config).eval()
    block = ["attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_1.weight",
             "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias"]
    state = {"transformer.positions_embed.weight": params[0], "transformer.tokens_embed.weight": params[1]}
    for i, value in enumerate(params[2:]):
        state[f"transformer.h.{i // 12}.{block[i % 12]}"] = value[0] if value.ndim == 3 else value
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False)
    model.tie_weights()
    return model


def tiny_gpt1_config(**overrides):
    return models.OpenAIGPTConfig(**{**dict(vocab_size=40, n_positions=12, n_embd=8, n_layer=2, n_head=2), **overrides})


IDS = torch.tensor([[1, 5, 9, 33, 2, 17, 40 - 1, 0]])


# -- GPT-2 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["folder", "prefix"])
def test_gpt2_release_gives_hugging_faces_logits(where):
    config = release.gpt2_config(HPARAMS)
    model = models.GPT2LMHeadModel.from_config(config)
    path = FIXTURES / "gpt2" if where == "folder" else FIXTURES / "gpt2" / "model.ckpt"
    assert release.load_tf_weights_in_gpt2(model, path) is model
    with torch.no_grad():
        ours, theirs = model(IDS).logits, hugging_face_gpt2()(IDS).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_the_reader_gives_tensorflows_arrays_bit_for_bit():
    checkpoint = tf_checkpoint.TFCheckpoint(FIXTURES / "gpt2" / "model.ckpt.index")
    names = {k.removeprefix("gpt2:") for k in REFERENCE.files if k.startswith("gpt2:")}
    assert set(checkpoint.entries) == names and checkpoint.shards == 1
    for name in names:
        assert np.array_equal(checkpoint.read(name), REFERENCE["gpt2:" + name]), name


@pytest.fixture
def openai_server(monkeypatch, tmp_path):
    """OpenAI's two hosts, imitated: GPT-2's models/124M/ and finetune-transformer-lm's model/."""
    server = FakeHub().start()
    for path in (FIXTURES / "gpt2").iterdir():
        server.add("openai/gpt-2", f"models/124M/{path.name}", path.read_bytes())
    vocab = {char: byte for byte, char in bpe.bytes_to_unicode().items()}
    vocab["<|endoftext|>"], vocab["Ġt"] = 256, 257
    server.add("openai/gpt-2", "models/124M/encoder.json", json.dumps(vocab).encode())
    server.add("openai/gpt-2", "models/124M/vocab.bpe", "#version: 0.2\nĠ t\n".encode())
    for path in (FIXTURES / "gpt1").iterdir():
        server.add("openai/finetune-transformer-lm", f"model/{path.name}", path.read_bytes())
    monkeypatch.setenv("GPT_HUB_OPENAI_GPT2_URL", f"{server.endpoint}/openai/gpt-2/resolve/main")
    monkeypatch.setenv("GPT_HUB_OPENAI_GPT1_URL", f"{server.endpoint}/openai/finetune-transformer-lm/resolve/main")
    yield server
    server.stop()


def test_gpt2_release_by_name_through_the_download_layer(openai_server):
    model = models.GPT2LMHeadModel.from_pretrained("openai/124M")
    assert (model.config.n_layer, model.config.n_embd, model.config.vocab_size) == (2, 8, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, hugging_face_gpt2()(IDS).logits, rtol=1e-5, atol=1e-5)
    assert openai_server.gets("model.ckpt.data-00000-of-00001")  # fetched from OpenAI's layout
    tokenizer = repo_module("tokenizers").GPT2Tokenizer.from_pretrained("openai/124M")
    assert tokenizer.encode(" the") == [257, ord("h"), ord("e")]  # OpenAI's encoder.json and vocab.bpe
    bf16 = hubconf.gpt2LMHeadModel("openai/124M", torch_dtype=torch.bfloat16)  # the torch.hub entrypoint
    assert bf16.transformer.wte.weight.dtype == torch.bfloat16
    with pytest.raises(release.OriginalReleaseError, match="is a GPT-2 release; load it with a GPT2 class"):
        models.OpenAIGPTModel.from_pretrained("openai/124M")


def test_release_folders_on_disk_load_with_from_pretrained():
    gpt2 = models.GPT2LMHeadModel.from_pretrained(FIXTURES / "gpt2")
    gpt1 = models.OpenAIGPTLMHeadModel.from_pretrained(str(FIXTURES / "gpt1"), n_head=2)
    with torch.no_grad():
        torch.testing.assert_close(gpt2(IDS).logits, hugging_face_gpt2()(IDS).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gpt1(IDS).logits, hugging_face_gpt1()(IDS).logits, rtol=1e-5, atol=1e-5)


def test_no_tensorflow_is_imported():
    script = f"""
import sys, importlib, importlib.util
spec = importlib.util.spec_from_file_location("hubconf", {str(REPO / "hubconf.py")!r})
hub = importlib.util.module_from_spec(spec); spec.loader.exec_module(hub)
release = importlib.import_module(hub._PACKAGE + ".models.openai_release")
models = importlib.import_module(hub._PACKAGE + ".models")
model = models.GPT2LMHeadModel.from_config(release.gpt2_config({json.dumps(HPARAMS)}))
release.load_tf_weights_in_gpt2(model, {str(FIXTURES / "gpt2")!r})
gpt = models.OpenAIGPTModel.from_config(models.OpenAIGPTConfig(vocab_size=40, n_positions=12, n_embd=8, n_layer=2, n_head=2))
release.load_tf_weights_in_openai_gpt(gpt, {str(FIXTURES / "gpt1")!r})
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorboard", "keras")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_truncated_data_file_names_the_tensor(tmp_path):
    folder = release_copy(tmp_path)
    data = folder / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:5000])
    model = models.GPT2Model.from_config(release.gpt2_config(HPARAMS))
    with pytest.raises(release.OriginalReleaseError, match=r"model/\S+: its bytes run past the end of the data file"):
        release.load_tf_weights_in_gpt2(model, folder)


def test_a_crc_mismatch_names_the_tensor(tmp_path):
    folder = release_copy(tmp_path)
    entry = tf_checkpoint.TFCheckpoint(folder / "model.ckpt.index").entries["model/h1/mlp/c_fc/w"]
    data = folder / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 10] ^= 0x40
    data.write_bytes(bytes(raw))
    model = models.GPT2Model.from_config(release.gpt2_config(HPARAMS))
    with pytest.raises(release.OriginalReleaseError, match="model/h1/mlp/c_fc/w fails its CRC-32C check"):
        release.load_tf_weights_in_gpt2(model, folder)


def test_a_damaged_index_is_caught(tmp_path):
    folder = release_copy(tmp_path)
    index = folder / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[40] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(tf_checkpoint.TFCheckpointError, match="fails its CRC-32C check .the index file is damaged"):
        tf_checkpoint.TFCheckpoint(index)
    index.write_bytes(bytes(raw[:100]))
    with pytest.raises(tf_checkpoint.TFCheckpointError, match="is not a TensorFlow checkpoint index"):
        tf_checkpoint.TFCheckpoint(index)


def test_an_unknown_dtype_names_the_tensor():
    model = models.GPT2Model.from_config(release.gpt2_config(HPARAMS))
    with pytest.raises(release.OriginalReleaseError, match="model/ln_f/g has TensorFlow dtype complex64"):
        release.load_tf_weights_in_gpt2(model, FIXTURES / "gpt2-complex")


def test_a_missing_variable_is_named():
    model = models.GPT2Model.from_config(release.gpt2_config(HPARAMS))
    with pytest.raises(release.OriginalReleaseError, match="the checkpoint has no variable 'model/ln_f/b'"):
        release.load_tf_weights_in_gpt2(model, FIXTURES / "gpt2-missing")


def test_a_shape_that_disagrees_with_hparams_is_named(openai_server):
    openai_server.add("openai/gpt-2", "models/124M/hparams.json", json.dumps({**HPARAMS, "n_embd": 16}).encode())
    with pytest.raises(release.OriginalReleaseError, match=r"model/wte has shape \[64, 8\], but the model's "
                                                           r"configuration \(from hparams.json or given\) needs \[64, 16\]"):
        models.GPT2LMHeadModel.from_pretrained("openai/124M")


# -- GPT-1 --------------------------------------------------------------------------------------

def test_gpt1_release_gives_hugging_faces_logits():
    model = models.OpenAIGPTLMHeadModel.from_config(tiny_gpt1_config())
    release.load_tf_weights_in_openai_gpt(model, FIXTURES / "gpt1")
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, hugging_face_gpt1()(IDS).logits, rtol=1e-5, atol=1e-5)


def test_gpt1_release_by_name_and_with_special_tokens(openai_server):
    model = models.OpenAIGPTLMHeadModel.from_pretrained("openai-gpt-original", n_head=2)
    assert (model.config.n_positions, model.config.vocab_size, model.config.n_layer) == (12, 40, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, hugging_face_gpt1()(IDS).logits, rtol=1e-5, atol=1e-5)
    grown = models.OpenAIGPTDoubleHeadsModel.from_config(tiny_gpt1_config(vocab_size=43))
    extra = grown.transformer.tokens_embed.weight[40:].detach().clone()
    release.load_tf_weights_in_openai_gpt(grown, "openai-gpt-original")
    assert torch.equal(grown.transformer.tokens_embed.weight[:40], torch.from_numpy(REFERENCE["gpt1:1"]))
    assert torch.equal(grown.transformer.tokens_embed.weight[40:], extra)  # the fine-tuning rows are kept


def test_damaged_gpt1_files_are_named(tmp_path):
    folder = release_copy(tmp_path, "gpt1")
    model = models.OpenAIGPTModel.from_config(tiny_gpt1_config())
    part = folder / "params_3.npy"
    part.write_bytes(part.read_bytes()[:200])
    with pytest.raises(release.OriginalReleaseError, match="params_3.npy cannot be read"):
        release.load_tf_weights_in_openai_gpt(model, folder)
    shutil.copy(FIXTURES / "gpt1" / "params_3.npy", part)
    shapes = json.loads((folder / "params_shapes.json").read_text())
    (folder / "params_shapes.json").write_text(json.dumps([[13, 8]] + shapes[1:]))
    with pytest.raises(release.OriginalReleaseError, match="describes"):
        release.load_tf_weights_in_openai_gpt(model, folder)
    wide = models.OpenAIGPTModel.from_config(tiny_gpt1_config(n_embd=16))
    with pytest.raises(release.OriginalReleaseError, match=r"params\[0\] \(positions\) has shape \[12, 8\]"):
        release.load_tf_weights_in_openai_gpt(wide, FIXTURES / "gpt1")


# -- CRC-32C ------------------------------------------------------------------------------------

def test_crc32c_known_values_and_side_by_side_pieces(monkeypatch):
    assert crc.crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc.crc32c(b"") == 0 and crc.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720's example
    assert crc.unmask(crc.mask(0x12345678)) == 0x12345678
    data = np.random.default_rng(0).integers(0, 256, 300_007, dtype=np.uint8).tobytes()
    monkeypatch.setattr(crc, "LANES", 1024)  # 292 bytes per piece: the side-by-side path
    register = 0xFFFFFFFF
    for byte in data:  # byte at a time, the textbook way
        register = (register >> 8) ^ int(crc.TABLE[(register ^ byte) & 0xFF])
    assert crc.crc32c(data) == register ^ 0xFFFFFFFF
