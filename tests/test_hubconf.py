"""The repository as torch.hub users meet it: list, help, load."""

import inspect

import pytest
import torch
from conftest import REPO, TINY, hubconf, models, repo_module

GPT2_ENTRYPOINTS = ["gpt2Config", "gpt2DoubleHeadsModel", "gpt2ForQuestionAnswering", "gpt2ForSequenceClassification",
                    "gpt2ForTokenClassification", "gpt2LMHeadModel", "gpt2Model", "gpt2Tokenizer"]


@pytest.fixture
def hub_repo(monkeypatch):
    """torch.hub's GitHub functions, with the fetch of '<owner>/<repo>' answered by this folder."""
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: str(REPO))
    return "owner/repo"


GPT_ENTRYPOINTS = ["openAIGPTConfig", "openAIGPTDoubleHeadsModel", "openAIGPTForSequenceClassification",
                   "openAIGPTLMHeadModel", "openAIGPTModel", "openAIGPTTokenizer"]
ENTRYPOINTS = sorted(GPT2_ENTRYPOINTS + GPT_ENTRYPOINTS)


def test_list_shows_the_entrypoints_only(hub_repo):
    assert sorted(torch.hub.list(hub_repo, trust_repo=True)) == ENTRYPOINTS


@pytest.mark.parametrize("entry", ENTRYPOINTS)
def test_help_documents_each_entrypoint_with_an_example(hub_repo, entry):
    doc = torch.hub.help(hub_repo, entry, trust_repo=True)
    assert "Example" in doc and f"torch.hub.load('<owner>/<repo>', '{entry}'" in doc
    for option in ("revision", "force_download", "cache_dir", "local_files_only"):
        assert option in doc and option in inspect.signature(getattr(hubconf, entry)).parameters, option


MODEL_ENTRYPOINTS = [name for name in ENTRYPOINTS if not name.endswith(("Tokenizer", "Config"))]
LOADING = ("torch_dtype", "revision", "force_download", "cache_dir", "local_files_only", "config", "state_dict",
           "pretrained", "quantize", "device_map")


@pytest.mark.parametrize("entry", MODEL_ENTRYPOINTS)
def test_model_entrypoints_name_their_loading_options(entry, monkeypatch):
    function = getattr(hubconf, entry)
    parameters = inspect.signature(function).parameters
    assert all(name in parameters for name in LOADING) and "config_overrides" in parameters
    assert all(f"{name}:" in function.__doc__ for name in LOADING)
    model_class = getattr(models, entry.replace("openAIGPT", "OpenAIGPT").replace("gpt2", "GPT2"))
    seen = {}
    monkeypatch.setattr(model_class, "from_pretrained", classmethod(lambda cls, name, **kw: seen.update(kw, name=name)))
    function("somewhere", torch_dtype=torch.bfloat16, revision="v1", force_download=True, cache_dir="/cache", n_layer=3)
    assert seen == dict(name="somewhere", torch_dtype=torch.bfloat16, revision="v1", force_download=True,
                        cache_dir="/cache", n_layer=3, config=None, state_dict=None, quantize=None, device_map=None)


def test_load_a_local_checkpoint(hf_checkpoint):
    model = torch.hub.load(str(REPO), "gpt2LMHeadModel", str(hf_checkpoint), source="local")
    assert type(model).__name__ == "GPT2LMHeadModel" and not model.training
    logits, past = model(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, TINY["vocab_size"]) and len(past) == TINY["n_layer"]


def test_keywords_reach_the_config_and_the_loader(hf_checkpoint):
    model = torch.hub.load(str(REPO), "gpt2ForSequenceClassification", str(hf_checkpoint), source="local",
                           num_labels=5, pad_token_id=0, torch_dtype=torch.bfloat16)
    assert model.config.num_labels == 5 and model.score.weight.shape == (5, TINY["n_embd"])
    assert model.dtype == torch.bfloat16
    logits = model(torch.tensor([[3, 4, 0], [5, 0, 0]])).logits
    assert logits.shape == (2, 5)


def test_device_map_puts_the_model_on_one_device(hf_checkpoint):
    gpu = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert models.GPT2LMHeadModel.from_pretrained(hf_checkpoint, device_map="cpu").device == torch.device("cpu")
    model = torch.hub.load(str(REPO), "gpt2LMHeadModel", str(hf_checkpoint), source="local", device_map="auto")
    assert {p.device for p in model.parameters()} == {gpu}
    quantized = hubconf.gpt2LMHeadModel("gpt2", pretrained=False, n_layer=1, n_embd=64, n_head=2, vocab_size=128,
                                        quantize="int8", device_map="auto")
    assert quantized.device == torch.device("cpu") and quantized.quantization()["scheme"] == "int8"
    whole = models.GPT2LMHeadModel.from_pretrained(hf_checkpoint, device_map={"": "cpu"})  # Hugging Face's idiom
    assert whole.device == torch.device("cpu")


def test_a_checkpoint_saved_quantized_stays_on_the_cpu_under_auto(tmp_path, monkeypatch):
    """Whether a checkpoint is quantized shows only once it is read: "auto" then keeps it on the
    CPU (it went to the GPU, and failed there), and a GPU asked for by name is refused, saying why."""
    models.GPT2LMHeadModel(models.GPT2Config(**TINY)).quantize("int8").save_pretrained(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as resolving sees it
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    loaded = models.GPT2LMHeadModel.from_pretrained(tmp_path, device_map="auto")
    assert loaded.device == torch.device("cpu") and loaded.quantization()["scheme"] == "int8"
    with pytest.raises(ValueError, match=r"the checkpoint is quantized \(int8\), which runs on the CPU; "
                                         r"device_map='cuda' asks for cuda:0"):
        repo_module("models.devices").place(loaded, torch.device("cuda", 0), "cuda")


def test_random_weights_without_download():
    model = torch.hub.load(str(REPO), "gpt2LMHeadModel", "distilgpt2", source="local", pretrained=False,
                           n_positions=64, vocab_size=128)
    assert (model.config.n_layer, model.config.n_embd, model.config.n_positions) == (6, 768, 64)
    config = torch.hub.load(str(REPO), "gpt2Config", "gpt2-large", source="local")
    assert isinstance(config, models.GPT2Config) and config.n_layer == 36
    tiny = models.GPT2Config(**TINY)
    model = torch.hub.load(str(REPO), "gpt2DoubleHeadsModel", config=tiny, pretrained=False, source="local")
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.2)
