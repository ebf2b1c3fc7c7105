"""Our OpenAI GPT classes against Hugging Face transformers' with the same weights (fp32, 1e-5),
and the key/value cache that Hugging Face's GPT lacks."""

import pytest
import torch
from conftest import TINY_GPT, make_hf_checkpoint, models, require

transformers = require("transformers")
ATOL = 1e-5
HEADS = ["OpenAIGPTModel", "OpenAIGPTLMHeadModel", "OpenAIGPTDoubleHeadsModel", "OpenAIGPTForSequenceClassification"]


def pair(tmp_path, name="OpenAIGPTLMHeadModel", **overrides):
    path = make_hf_checkpoint(tmp_path / name, name, **overrides)
    return getattr(transformers, name).from_pretrained(path).eval(), getattr(models, name).from_pretrained(path)


def close(a, b, atol=ATOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= atol, diff
    return diff


def ids(*shape):
    return torch.randint(1, TINY_GPT["vocab_size"], shape)


@pytest.mark.parametrize("name", HEADS)
def test_every_head_matches_hugging_face(tmp_path, name):
    hf, ours = pair(tmp_path, name, num_labels=3, pad_token_id=0)
    x, kwargs = ids(2, 9), {}
    if name == "OpenAIGPTLMHeadModel":
        kwargs = {"labels": x}
    elif name == "OpenAIGPTForSequenceClassification":
        kwargs = {"labels": torch.tensor([2, 0])}
    elif name == "OpenAIGPTDoubleHeadsModel":
        x = ids(2, 3, 9)
        kwargs = {"mc_token_ids": torch.tensor([[8, 5, 2], [0, 8, 7]]), "labels": x, "mc_labels": torch.tensor([2, 0])}
    with torch.no_grad():
        theirs, mine = hf(x, **kwargs), ours(x, **kwargs)
    for field in ("last_hidden_state", "logits", "mc_logits", "loss", "mc_loss"):
        if getattr(theirs, field, None) is not None:
            close(getattr(theirs, field), getattr(mine, field))


@pytest.mark.parametrize("afn", ["gelu", "relu", "silu"])
def test_hidden_states_attentions_and_activations_match_hugging_face(tmp_path, afn):
    hf, ours = pair(tmp_path, afn=afn)
    x = ids(2, 8)
    with torch.no_grad():
        theirs = hf(x, output_hidden_states=True, output_attentions=True)
        mine = ours(x, output_hidden_states=True, output_attentions=True)
    close(theirs.logits, mine.logits)
    assert len(mine.hidden_states) == len(theirs.hidden_states) == TINY_GPT["n_layer"] + 1
    for a, b in zip(theirs.hidden_states + theirs.attentions, mine.hidden_states + mine.attentions):
        close(a, b)


def test_padding_matches_hugging_face_and_the_row_alone(tmp_path):
    hf, ours = pair(tmp_path)
    x = torch.zeros(2, 8, dtype=torch.long)
    mask = torch.zeros(2, 8, dtype=torch.long)
    x[0], mask[0] = ids(8), 1
    x[1, 3:], mask[1, 3:] = ids(5), 1  # left padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf(x, attention_mask=mask, position_ids=positions).logits
        mine = ours(x, attention_mask=mask).logits
        real = mask.bool()
        close(theirs[real], mine[real])
        close(mine[1, 3:], ours(x[1:, 3:]).logits[0])


def test_the_cache_gives_the_same_logits_and_tokens_as_recomputing(tmp_path):
    _, ours = pair(tmp_path)
    prompt = ids(2, 5)
    with torch.no_grad():
        # greedy decoding both ways: with the cache, and recomputing the prefix every token
        cached = []
        logits, past = ours(prompt)
        for _ in range(10):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            cached.append(nxt)
            logits, past = ours(nxt, past=past)
        recomputed = prompt
        for _ in range(10):
            recomputed = torch.cat([recomputed, ours(recomputed).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(torch.cat(cached, 1), recomputed[:, 5:])


def test_cached_logits_equal_the_full_forward(tmp_path):
    _, ours = pair(tmp_path)
    x = ids(2, 12)
    with torch.no_grad():
        full = ours(x).logits
        _, past = ours(x[:, :7])
        close(ours(x[:, 7:], past=past).logits, full[:, 7:])


def test_special_tokens_for_fine_tuning(tmp_path):
    _, ours = pair(tmp_path, "OpenAIGPTDoubleHeadsModel")
    config = models.OpenAIGPTConfig()
    assert (config.vocab_size, config.n_positions, config.afn, config.activation_function) == (40478, 512, "gelu", "gelu_new")
    before = ours.get_input_embeddings().weight.detach().clone()
    ours.resize_token_embeddings(TINY_GPT["vocab_size"] + 3)
    after = ours.get_input_embeddings().weight
    assert after.shape[0] == TINY_GPT["vocab_size"] + 3 and torch.equal(after[: before.shape[0]], before)
    assert ours.lm_head.weight is after and ours.config.vocab_size == TINY_GPT["vocab_size"] + 3
    assert ours.transformer.config.vocab_size == TINY_GPT["vocab_size"] + 3
    x = torch.tensor([[[99, 5, 100, 7, 101]]])
    lm_logits, mc_logits, _ = ours(x, torch.tensor([[4]]))
    assert lm_logits.shape[-1] == TINY_GPT["vocab_size"] + 3 and mc_logits.shape == (1, 1)
    ours.save_pretrained(tmp_path / "tuned")
    again = models.OpenAIGPTDoubleHeadsModel.from_pretrained(tmp_path / "tuned")
    assert torch.equal(again.get_input_embeddings().weight, after)
    theirs = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(tmp_path / "tuned").eval()
    with torch.no_grad():
        close(theirs(x, mc_token_ids=torch.tensor([[4]])).logits, again(x, torch.tensor([[4]])).logits)
    gpt = models.OpenAIGPTLMHeadModel.from_config(models.OpenAIGPTConfig(n_layer=1, n_embd=16, n_head=2, n_positions=8))
    gpt.set_num_special_tokens(3)
    assert gpt.get_input_embeddings().num_embeddings == 40481


@pytest.mark.parametrize("name", ["OpenAIGPTLMHeadModel", "GPT2LMHeadModel"])
def test_resizing_matches_hugging_face(tmp_path, name):
    """New rows were random (Hugging Face starts them at the mean of the old rows), and
    pad_to_multiple_of or no size at all raised a TypeError."""
    theirs, ours = pair(tmp_path, name)
    size = ours.config.vocab_size
    for model in (theirs, ours):
        model.resize_token_embeddings(size + 3, pad_to_multiple_of=8)
    want, got = theirs.get_input_embeddings().weight, ours.get_input_embeddings().weight
    assert got.shape == want.shape and got.shape[0] % 8 == 0 and ours.config.vocab_size == got.shape[0]
    close(got.detach(), want.detach(), atol=1e-4)  # theirs: drawn around the mean with covariance 1e-9 of the rows'
    assert ours.resize_token_embeddings() is ours.get_input_embeddings()  # no size: as many as now
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive int"):
        ours.resize_token_embeddings(size, pad_to_multiple_of=0)
    with pytest.raises(TypeError, match="mean_resizing must be True or False, got 'no'"):  # was read as True
        ours.resize_token_embeddings(size + 9, mean_resizing="no")
    ours.resize_token_embeddings(got.shape[0] + 2, mean_resizing=False)  # the 2019 way: drawn as at training
    assert not torch.equal(ours.get_input_embeddings().weight[-1], ours.get_input_embeddings().weight[-2])


def test_the_released_checkpoint_layout(tmp_path):
    """openai-gpt's pytorch_model.bin: keys without `transformer.`, with the attn.bias buffers."""
    reference = transformers.OpenAIGPTLMHeadModel.from_pretrained(make_hf_checkpoint(tmp_path / "hf", "OpenAIGPTLMHeadModel")).eval()
    state = {k.removeprefix("transformer."): v.clone() for k, v in reference.state_dict().items() if k != "lm_head.weight"}
    for i in range(TINY_GPT["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
    folder = tmp_path / "released"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    x = ids(1, 9)
    with torch.no_grad():
        close(reference(x).logits, models.OpenAIGPTLMHeadModel.from_pretrained(folder)(x).logits)
