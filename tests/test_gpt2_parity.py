"""Our GPT-2 classes against Hugging Face transformers' with the same weights (fp32, 1e-5)."""

import io

import pytest
import torch
from conftest import require, TINY, make_hf_checkpoint, models

transformers = require("transformers")
ATOL = 1e-5
HEADS = ["GPT2Model", "GPT2LMHeadModel", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification",
         "GPT2ForTokenClassification", "GPT2ForQuestionAnswering"]


def pair(tmp_path, name="GPT2LMHeadModel", eager=False, **overrides):
    """The same random weights in a Hugging Face model and in ours (loaded from HF's files)."""
    path = make_hf_checkpoint(tmp_path / name, name, **overrides)
    extra = {"attn_implementation": "eager"} if eager else {}
    hf = getattr(transformers, name).from_pretrained(path, **extra).eval()
    ours = getattr(models, name).from_pretrained(path)
    return hf, ours


def close(a, b, atol=ATOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= atol, diff
    return diff


def ids(*shape, high=TINY["vocab_size"]):
    return torch.randint(1, high, shape)


@pytest.mark.parametrize("name", HEADS)
def test_every_head_matches_hugging_face(tmp_path, name):
    hf, ours = pair(tmp_path, name, num_labels=3, pad_token_id=0)
    x = ids(2, 9)
    kwargs = {}
    if name == "GPT2LMHeadModel":
        kwargs = {"labels": x}
    elif name == "GPT2ForSequenceClassification":
        kwargs = {"labels": torch.tensor([0, 2])}
    elif name == "GPT2ForTokenClassification":
        kwargs = {"labels": torch.randint(0, 3, (2, 9))}
    elif name == "GPT2ForQuestionAnswering":
        kwargs = {"start_positions": torch.tensor([1, 3]), "end_positions": torch.tensor([4, 20])}
    elif name == "GPT2DoubleHeadsModel":
        x = ids(2, 3, 9)
        kwargs = {"mc_token_ids": torch.tensor([[8, 5, 2], [0, 8, 7]]), "labels": x, "mc_labels": torch.tensor([2, 0])}
    with torch.no_grad():
        theirs, mine = hf(x, **kwargs), ours(x, **kwargs)
    for field in ("last_hidden_state", "logits", "mc_logits", "start_logits", "end_logits", "loss", "mc_loss"):
        if getattr(theirs, field, None) is not None:
            close(getattr(theirs, field), getattr(mine, field))


@pytest.mark.parametrize("problem, labels", [
    ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
    ("regression", None),
])
def test_sequence_classification_losses(tmp_path, problem, labels):
    num_labels = 1 if problem == "regression" else 3
    hf, ours = pair(tmp_path, "GPT2ForSequenceClassification", num_labels=num_labels, pad_token_id=0)
    labels = torch.tensor([0.5, -1.0]) if labels is None else labels
    x = torch.cat([ids(2, 6), torch.zeros(2, 2, dtype=torch.long)], 1)  # right padding
    with torch.no_grad():
        theirs, mine = hf(x, labels=labels), ours(x, labels=labels)
    close(theirs.logits, mine.logits)
    close(theirs.loss, mine.loss)


def left_padded_batch():
    lengths = [9, 5, 7]
    x = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for row, n in enumerate(lengths):
        x[row, 9 - n:] = ids(n)
        mask[row, 9 - n:] = 1
    return x, mask


def test_left_padding_and_cache_match_hugging_face(tmp_path):
    hf, ours = pair(tmp_path)
    x, mask = left_padded_batch()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf(x, attention_mask=mask, position_ids=positions)
        mine = ours(x, attention_mask=mask)  # ours derives the positions from the mask
        real = mask.bool()
        close(theirs.logits[real], mine.logits[real])

        step = ids(3, 2)
        mask2 = torch.cat([mask, torch.ones(3, 2, dtype=torch.long)], 1)
        positions2 = positions[:, -1:] + torch.arange(1, 3)
        theirs2 = hf(step, past_key_values=theirs.past_key_values, attention_mask=mask2, position_ids=positions2)
        mine2 = ours(step, past=mine.past_key_values, attention_mask=mask2)
        close(theirs2.logits, mine2.logits)


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "OpenAIGPTLMHeadModel"])
def test_a_right_padded_batch_with_padding_in_the_labels_equals_hugging_face(tmp_path, name):
    """labels=input_ids over right padding (a custom loop that does not set -100): padding
    positions were the last real one's, not their index as transformers', so the loss differed
    (10.7004 against 10.6949)."""
    hf, ours = pair(tmp_path, name)
    x = ids(3, 7)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    with torch.no_grad():
        theirs, mine = hf(x, attention_mask=mask, labels=x), ours(x, attention_mask=mask, labels=x)
    close(theirs.logits, mine.logits)
    assert abs(theirs.loss.item() - mine.loss.item()) < 1e-5


def test_left_padded_row_equals_the_row_alone(tmp_path):
    _, ours = pair(tmp_path)
    x, mask = left_padded_batch()
    with torch.no_grad():
        batch = ours(x, attention_mask=mask).logits
        for row in range(3):
            alone = ours(x[row:row + 1, mask[row].bool()]).logits[0]
            close(batch[row, mask[row].bool()], alone)
    assert torch.isfinite(batch).all()


@pytest.mark.parametrize("value", [2, 0.5, True])
def test_a_mask_of_other_nonzero_values_keeps_those_tokens_as_hugging_face_does(tmp_path, value):
    """A mask of 2s (segment ids) counted each token twice in the positions (logits 0.54 away from
    transformers'), and one of 0.5s counted none (an IndexError in the position embedding):
    transformers keeps every nonzero position."""
    hf, ours = pair(tmp_path)
    x, mask = left_padded_batch()
    other = torch.where(mask.bool(), torch.tensor(value), torch.tensor(0).to(torch.tensor(value).dtype))
    with torch.no_grad():
        close(ours(x, attention_mask=other).logits[mask.bool()], ours(x, attention_mask=mask).logits[mask.bool()])
        unpadded = torch.full((1, 5), value)
        close(ours(x[:1, :5], attention_mask=unpadded).logits, hf(x[:1, :5], attention_mask=unpadded).logits)


@pytest.mark.parametrize("overrides", [
    {"scale_attn_weights": False},
    {"scale_attn_by_inverse_layer_idx": True},
    {"reorder_and_upcast_attn": True},
    {"activation_function": "gelu"},
    {"activation_function": "relu"},
    {"activation_function": "silu"},
    {"activation_function": "tanh"},
    {"n_inner": 48},
])
def test_config_variants_match_hugging_face(tmp_path, overrides):
    hf, ours = pair(tmp_path, eager=True, **overrides)
    x = ids(2, 8)
    with torch.no_grad():
        theirs, mine = hf(x, labels=x), ours(x, labels=x)
        close(theirs.logits, mine.logits)
        close(theirs.loss, mine.loss)
        step = ids(2, 3)
        close(hf(step, past_key_values=theirs.past_key_values).logits, ours(step, past=mine.past_key_values).logits)


def test_the_returned_cache_answers_what_transformers_5_code_asks(tmp_path):
    """transformers 5 returns a Cache object; code written for it calls get_seq_length() and
    to_legacy_cache() on past_key_values, which were plain tuples here (an AttributeError)."""
    hf, ours = pair(tmp_path)
    x = ids(2, 8)
    with torch.no_grad():
        theirs, mine = hf(x, use_cache=True).past_key_values, ours(x, use_cache=True).past_key_values
        assert mine.get_seq_length() == theirs.get_seq_length() == 8
        legacy = mine.to_legacy_cache()
        assert type(legacy) is tuple and len(legacy) == len(mine) and all(a is b for a, b in zip(legacy, mine))
        step = ids(2, 1)
        close(ours(step, past_key_values=mine).logits, ours(step, past_key_values=legacy).logits)
        assert ours(step, past_key_values=mine).past_key_values.get_seq_length() == 9
    buffer = io.BytesIO()  # saved as a plain tuple: loads without this package (its private name) in the process
    torch.save(mine, buffer)
    assert b"_gpt_hub" not in buffer.getvalue()
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is tuple and all(torch.equal(a[0], b[0]) for a, b in zip(loaded, mine))


def test_hidden_states_and_attentions_match_hugging_face(tmp_path):
    hf, ours = pair(tmp_path, eager=True)
    x = ids(2, 8)
    with torch.no_grad():
        theirs = hf(x, output_hidden_states=True, output_attentions=True)
        mine = ours(x, output_hidden_states=True, output_attentions=True)
    assert len(mine.hidden_states) == len(theirs.hidden_states) == TINY["n_layer"] + 1
    for a, b in zip(theirs.hidden_states, mine.hidden_states):
        close(a, b)
    assert len(mine.attentions) == len(theirs.attentions) == TINY["n_layer"]
    for a, b in zip(theirs.attentions, mine.attentions):
        close(a, b)


def test_token_types_and_input_embeddings_match_hugging_face(tmp_path):
    hf, ours = pair(tmp_path)
    x, types = ids(2, 6), ids(2, 6)
    embeds = torch.randn(2, 6, TINY["n_embd"])
    with torch.no_grad():
        close(hf(x, token_type_ids=types).logits, ours(x, token_type_ids=types).logits)
        close(hf(inputs_embeds=embeds).logits, ours(inputs_embeds=embeds).logits)


def test_training_mode_gradients_match_hugging_face(tmp_path):
    hf, ours = pair(tmp_path, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf.train(), ours.train()
    x = ids(2, 8)
    hf(x, labels=x).loss.backward()
    ours(x, labels=x).loss.backward()
    theirs = dict(hf.named_parameters())
    for name, param in ours.named_parameters():
        close(theirs[name].grad, param.grad, atol=1e-6)


def test_cache_continues_exactly_in_every_format(tmp_path):
    _, ours = pair(tmp_path)
    x = ids(2, 10)
    with torch.no_grad():
        full = ours(x).logits
        logits, past = ours(x[:, :6])
        assert len(past) == TINY["n_layer"] and past[0][0].shape == (2, 4, 6, 8)  # [B, H, T, D]
        close(ours(x[:, 6:], past=past).logits, full[:, 6:])
        close(ours(x[:, 6:], past_key_values=past).logits, full[:, 6:])
        stacked = [torch.stack(layer) for layer in past]  # the 2019 layout: [2, B, H, T, D] per layer
        close(ours(x[:, 6:], past=stacked).logits, full[:, 6:])
        for t in range(6, 10):  # one token at a time
            step, past = ours(x[:, t:t + 1], past=past)
            close(step[:, 0], full[:, t])


def test_head_mask_silences_exactly_one_head(tmp_path):
    _, ours = pair(tmp_path)
    x = ids(1, 7)
    head_mask = torch.ones(TINY["n_layer"], TINY["n_head"])
    head_mask[1, 2] = 0
    with torch.no_grad():
        masked = ours(x, head_mask=head_mask).logits
        assert close(ours(x, head_mask=torch.ones(TINY["n_head"])).logits, ours(x).logits) == 0
        # Silencing a head is the same as zeroing the rows of c_proj that read its output.
        head_dim = TINY["n_embd"] // TINY["n_head"]
        ours.transformer.h[1].attn.c_proj.weight[2 * head_dim:3 * head_dim] = 0
        close(masked, ours(x).logits)


def test_outputs_read_as_2019_tuples_and_as_objects(tmp_path):
    hf, ours = pair(tmp_path, "GPT2DoubleHeadsModel")
    base = models.GPT2Model.from_pretrained(tmp_path / "GPT2DoubleHeadsModel")
    x = ids(1, 2, 5)
    with torch.no_grad():
        lm_logits, mc_logits, presents = ours(x, torch.tensor([[4, 4]]))
        assert lm_logits.shape == (1, 2, 5, TINY["vocab_size"]) and mc_logits.shape == (1, 2)
        out = ours(x, torch.tensor([[4, 4]]))
        assert out.logits is out[0] is out["logits"] is out.lm_logits
        assert out.keys() == ["logits", "mc_logits", "past_key_values"]
        lm_loss, mc_loss, *_ = ours(x, torch.tensor([[4, 4]]), lm_labels=x, mc_labels=torch.tensor([1]))
        assert lm_loss.dim() == mc_loss.dim() == 0
        hidden, past = base(x[0])
        assert hidden.shape == (2, 5, TINY["n_embd"]) and len(past) == TINY["n_layer"]
        assert torch.equal(base(x[0])[0, -1, :], hidden[0, -1, :])  # tuple index: the first tensor
        assert isinstance(base(x[0], return_dict=False), tuple)
        assert base(x[0], use_cache=False).keys() == ["last_hidden_state"]


def test_bad_inputs_raise_clear_errors(tmp_path):
    _, ours = pair(tmp_path)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 96\)"):
        ours(torch.tensor([[1, 96]]))
    with pytest.raises(ValueError, match="n_positions=32"):
        ours(ids(1, 33))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        ours()
    with pytest.raises(TypeError, match="integer tensor"):
        ours(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \[1, 3\].*must cover all 4 positions"):
        ours(ids(1, 4), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="has 0 layers, the model has 2"):
        ours(ids(1, 4), past=[])


@pytest.mark.parametrize("keep", [1, 3, 0])
def test_logits_to_keep_matches_hugging_face(tmp_path, keep):
    hf, ours = pair(tmp_path)
    x = ids(2, 9)
    with torch.no_grad():
        want, got = hf(x, logits_to_keep=keep).logits, ours(x, logits_to_keep=keep).logits
    assert got.shape == (2, keep or 9, TINY["vocab_size"])
    close(got, want)


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "GPT2DoubleHeadsModel"])
def test_parameter_counts_match_hugging_face(tmp_path, name):
    """exclude_embeddings left out the token embedding only (transformers: positions too), and
    only_trainable (common in fine-tuning scripts) was a TypeError."""
    hf, ours = pair(tmp_path, name)
    for part in (hf, ours):
        part.transformer.wpe.weight.requires_grad_(False)
    for kwargs in ({}, {"exclude_embeddings": True}, {"only_trainable": True},
                   {"only_trainable": True, "exclude_embeddings": True}):
        assert ours.num_parameters(**kwargs) == hf.num_parameters(**kwargs), kwargs


def test_a_transformers_cache_object_is_extended_in_place(tmp_path):
    """transformers 5's pattern: past_key_values=DynamicCache() (empty) was refused ("0 layers"),
    and a cache object passed in was left as it was, so a loop that did not take the returned one
    back ran on a stale cache (logits off by 0.6, silently)."""
    hf, ours = pair(tmp_path)
    x = ids(2, 8)
    with torch.no_grad():
        cache = transformers.DynamicCache()
        out = ours(x[:, :5], past_key_values=cache, use_cache=True)
        assert out.past_key_values is cache and cache.get_seq_length() == 5
        for t in range(5, 8):  # the same object each step, its return value ignored
            step = ours(x[:, t:t + 1], past_key_values=cache, use_cache=True)
        assert cache.get_seq_length() == 8
        close(step.logits[:, -1], ours(x).logits[:, -1])
        theirs = transformers.DynamicCache()
        hf(x[:, :5], past_key_values=theirs, use_cache=True)
        close(ours(x[:, 5:], past_key_values=cache_of(ours, x[:, :5])).logits,
              hf(x[:, 5:], past_key_values=theirs).logits)


def test_other_cache_objects_are_refused_by_name_and_a_stacked_2019_cache_is_taken(tmp_path):
    """transformers' StaticCache (a full-length buffer) was taken as a DynamicCache on the first
    call, then failed with "'StaticCache' object is not iterable"; all layers of a 2019 cache
    stacked in one tensor were refused as if they were an attention mask."""
    _, ours = pair(tmp_path)
    x = ids(1, 6)
    static = transformers.StaticCache(config=transformers.GPT2Config(**TINY), max_cache_len=16)
    with torch.no_grad(), pytest.raises(ValueError, match="transformers' StaticCache, which these models do not fill"):
        ours(x[:, :3], past_key_values=static, use_cache=True)
    with torch.no_grad():
        past = ours(x[:, :3], use_cache=True).past_key_values
        stacked = torch.stack([torch.stack(layer) for layer in past])  # [n_layer, 2, B, H, T, D]
        close(ours(x[:, 3:], past=stacked).logits, ours(x[:, 3:], past=past).logits)
    with pytest.raises(ValueError, match="pass an attention mask by keyword"):
        ours(x, torch.ones(1, 6))


def cache_of(model, x):
    cache = transformers.DynamicCache()
    model(x, past_key_values=cache, use_cache=True)
    return cache


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "OpenAIGPTDoubleHeadsModel"])
def test_gradient_checkpointing_gives_the_same_gradients_recomputing_each_block(tmp_path, name, caplog):
    """model.gradient_checkpointing_enable(), common in fine-tuning scripts, was an AttributeError."""
    _, ours = pair(tmp_path, name)
    ours.train()
    x = ids(2, 6)

    def gradients():
        ours.zero_grad()
        torch.manual_seed(7)  # the same dropout in both runs: checkpointing replays it
        loss = ours(x, labels=x).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in ours.named_parameters() if p.grad is not None}

    plain_loss, plain = gradients()
    calls = []
    hooks = [block.register_forward_pre_hook(lambda *_: calls.append(1)) for block in ours.transformer.h]
    ours.gradient_checkpointing_enable({"use_reentrant": False})
    assert ours.is_gradient_checkpointing
    loss, checkpointed = gradients()
    assert len(calls) == 2 * len(ours.transformer.h)  # each block ran again during backward
    assert torch.equal(loss, plain_loss) and plain.keys() == checkpointed.keys()
    for key in plain:
        close(plain[key], checkpointed[key], atol=1e-6)
    with caplog.at_level("WARNING"):
        assert ours(x, use_cache=True).past_key_values is None
    assert "does not go with gradient checkpointing" in caplog.text
    ours.eval()
    with torch.no_grad():  # in inference it changes nothing
        assert ours(x).past_key_values is not None
    for hook in hooks:
        hook.remove()
    ours.gradient_checkpointing_disable()
    assert not ours.is_gradient_checkpointing
    with pytest.raises(TypeError, match="'use_reentrnt'"):
        ours.gradient_checkpointing_enable({"use_reentrnt": False})


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_with_frozen_embeddings_still_trains_the_blocks(tmp_path, reentrant):
    """use_reentrant=True with the embeddings frozen (an adapter's fine-tuning) gave the blocks no
    gradients at all, where transformers gives them theirs."""
    _, ours = pair(tmp_path, "GPT2LMHeadModel")
    ours.train()
    x = ids(2, 6)
    ours.transformer.wte.weight.requires_grad_(False)
    ours.transformer.wpe.weight.requires_grad_(False)

    def gradients():
        ours.zero_grad()
        torch.manual_seed(7)
        ours(x, labels=x).loss.backward()
        return {n: p.grad.clone() for n, p in ours.named_parameters() if p.grad is not None}

    plain = gradients()
    ours.gradient_checkpointing_enable({"use_reentrant": reentrant})
    checkpointed = gradients()
    assert "transformer.h.0.mlp.c_fc.weight" in checkpointed and plain.keys() == checkpointed.keys()
    for key in plain:
        close(plain[key], checkpointed[key], atol=1e-6)
