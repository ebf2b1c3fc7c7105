"""The native body step (models/native/decoder.py): when generate takes it, when it falls back to
the blocks' own steps, and what it refuses. That it gives the blocks' results bit for bit is
tests/test_native_block.py's test_generate_runs_the_native_body_and_the_modules_give_its_logits."""

from __future__ import annotations

import pytest
import torch
from test_native_block import STEPS, model_of

from conftest import need_compiler, need_kernel, repo_module

decoder_module = repo_module("models.native.decoder")
kv_cache = repo_module("models.kv_cache")
errors = repo_module("errors")


@pytest.fixture(autouse=True)
def _narrow(monkeypatch):
    need_compiler()
    monkeypatch.setenv("GPT_HUB_KERNEL", "narrow")
    monkeypatch.setattr(repo_module("models.route_choice"), "_chosen", {})


def body_step(model):
    """The model's body step and its native part, made."""
    body = model.transformer.bind()
    return body, body.native


def count_runs(monkeypatch, of=decoder_module.NativeDecoder) -> list:
    """The calls of ``of.run`` (the body's step, or greedy steps) from now on: each call's steps."""
    calls = []
    real = of.run
    monkeypatch.setattr(of, "run", lambda self, ids, c, *steps: calls.append(*steps or [1]) or real(self, ids, c, *steps))
    return calls


@pytest.mark.parametrize("case", ["batch", "mask", "grad"])
def test_other_calls_run_the_blocks_steps(monkeypatch, case):
    model = model_of("gpt2", "float32")
    calls = count_runs(monkeypatch)
    if case == "batch":
        out = model.generate(torch.tensor([[1, 2], [3, 4]]), max_new_tokens=3)
    elif case == "mask":  # a left-padded row: its steps need the mask
        out = model.generate(torch.tensor([[0, 2]]), attention_mask=torch.tensor([[0, 1]]), max_new_tokens=3)
    else:
        body, _ = body_step(model)
        cache = kv_cache.StaticKVCache.for_model(model, 1, 4)
        with torch.enable_grad():
            out = body(torch.tensor([[1]]), cache, None)
    assert out is not None and calls == []


def test_a_table_with_max_norm_or_a_block_without_a_native_form_makes_none(monkeypatch):
    model = model_of("gpt2", "float32")
    model.transformer.wte.max_norm = 1.0  # F.embedding would rewrite the table's rows on lookup
    assert body_step(model)[1]._make() is None
    model = model_of("gpt2", "float32")
    model.transformer.h[1].mlp.act = torch.relu
    assert body_step(model)[1]._make() is None
    model = model_of("gpt2", "float32")
    assert body_step(model)[1]._make() is not None


def test_a_cache_it_cannot_write_runs_the_blocks_steps(monkeypatch):
    model = model_of("gpt2", "float32")
    body, native = body_step(model)
    cache = kv_cache.StaticKVCache(2, 1, 4, 32, 4, torch.bfloat16)  # layers, batch, heads, head width, positions
    calls = count_runs(monkeypatch)
    with torch.no_grad():
        assert body(torch.tensor([[1]]), cache, None).shape == (1, 128)
    assert calls == [] and native._native is not None and not native._native.takes(cache)


def test_a_new_cache_is_checked_again():
    model = model_of("gpt2", "float32")
    _, native = body_step(model)
    with torch.no_grad():
        for length in (4, 6):  # one cache after another, each written where it is
            cache = kv_cache.StaticKVCache.for_model(model, 1, length)
            cache.keys_values.zero_()  # [L, 2, B, H, S, D]
            assert native(torch.tensor([[1]]), cache) is not None
            assert cache.length == 1 and (cache.keys_values[:, :, :, :, 0] != 0).all()
            assert (cache.keys_values[:, :, :, :, 1:] == 0).all()


def test_a_bad_token_a_full_cache_and_freed_memory_are_refused_not_read():
    model = model_of("gpt2", "float32")
    _, native = body_step(model)
    cache = kv_cache.StaticKVCache.for_model(model, 1, 2)
    with torch.no_grad():
        with pytest.raises(errors.InvalidArgumentError, match="outside the vocabulary of 64"):
            native(torch.tensor([[64]]), cache)
        cache.length = 2
        with pytest.raises(errors.InvalidArgumentError, match="holds 2 positions"):
            native(torch.tensor([[1]]), cache)
        cache.length = 0
        model.transformer.wpe.weight.untyped_storage().resize_(0)
        with pytest.raises(decoder_module.NativeKernelError, match="lost its memory"):
            native(torch.tensor([[1]]), cache)
        model = model_of("gpt2", "float32")
        _, native = body_step(model)
        native(torch.tensor([[1]]), cache)
        cache.keys_values.untyped_storage().resize_(0)
        with pytest.raises(decoder_module.NativeKernelError, match="lost its memory"):
            native(torch.tensor([[1]]), cache)


def test_a_negative_length_or_a_position_past_the_table_is_refused_not_written():
    """A cache's length of -1 made C write before the cache and read before the position table;
    past n_positions (in a larger cache) the message named the cache's capacity."""
    model = model_of("gpt2", "float32", n_positions=8)
    _, native = body_step(model)
    block = model.transformer.h[0].bind()
    with torch.no_grad():
        cache = kv_cache.StaticKVCache.for_model(model, 1, 20)
        cache.length = -1
        with pytest.raises(errors.InvalidArgumentError, match="must not be negative, got -1"):
            native(torch.tensor([[1]]), cache)
        with pytest.raises(errors.InvalidArgumentError, match="must not be negative"):
            block(torch.zeros(1, 1, 128), None, cache[0])
        cache.length = 8
        with pytest.raises(errors.InvalidArgumentError, match="8 past plus 1 new positions exceed n_positions=8"):
            native(torch.tensor([[1]]), cache)


def test_an_embedding_replaced_between_steps_is_looked_up_anew():
    """The tables were taken once: after ``wpe.weight.data = ...`` the native step still read the
    old one, where the modules (and the blocks' own steps) read the new."""
    model = model_of("gpt2", "float32")
    body, native = body_step(model)
    with torch.no_grad():
        cache, reference = kv_cache.StaticKVCache.for_model(model, 1, 4), kv_cache.StaticKVCache.for_model(model, 1, 4)
        assert native(torch.tensor([[1]]), cache) is not None
        model.transformer(torch.tensor([[1]]), past=reference)
        model.transformer.wpe.weight.data = torch.randn(64, 128)
        assert not native._native.takes(cache)
        stepped = body(torch.tensor([[2]]), cache, None)
        wanted = model.transformer(torch.tensor([[2]]), past=reference).last_hidden_state[:, -1]
    assert torch.equal(stepped, wanted)


def test_blocks_of_different_builds_keep_their_own_steps(monkeypatch):
    """decoder_step ran every block with the first block's build of block.c, whose vectors round
    otherwise: generate's logits then differed from the modules'."""
    need_kernel("wide")
    model = model_of("gpt2", "float32")
    body, native = body_step(model)
    steps = body.blocks
    monkeypatch.setenv("GPT_HUB_KERNEL", "wide")
    assert steps[0].native().variant == "wide"
    monkeypatch.setenv("GPT_HUB_KERNEL", "narrow")
    monkeypatch.setattr(repo_module("models.route_choice"), "_chosen", {})  # as a timing per shape may choose
    assert steps[1].native().variant == "narrow"
    assert native._make() is None


def greedy_by_modules(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    """Greedy tokens from the modules' forward, one token at a time over a cache."""
    with torch.no_grad():
        cache = kv_cache.StaticKVCache.for_model(model, 1, prompt.size(1) + new)
        tokens, logits = prompt, model(prompt, past=cache).logits[:, -1]
        for _ in range(new):
            token = logits.argmax(-1, keepdim=True)  # [1, 1]
            tokens = torch.cat([tokens, token], 1)
            logits = model(token, past=cache).logits[:, -1]
    return tokens


@pytest.mark.parametrize("kind", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("new", [8, 20])
def test_greedy_steps_are_one_native_call_and_choose_the_modules_tokens(monkeypatch, kind, new):
    model = model_of("gpt2", kind)
    calls = count_runs(monkeypatch, decoder_module.NativeGreedy)
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=new)
    assert calls == {8: [7], 20: [16, 3]}[new]  # the steps after the prompt's, 16 a call (nothing between them)
    assert torch.equal(out, greedy_by_modules(model, torch.tensor([[1, 2, 3]]), new))


def test_a_head_that_runs_pytorchs_kernel_leaves_the_choice_to_the_logits(monkeypatch):
    """The greedy step runs the head's kernel in its place only where that kernel is the one its
    bound product runs for one row: PyTorch's may round otherwise."""
    model = model_of("gpt2", "float32")
    width, vocabulary = model.config.n_embd, model.config.vocab_size
    chosen = repo_module("models.route_choice")._chosen
    chosen[("float", torch.float32, False, width, vocabulary, torch.get_num_threads())] = ("torch", "narrow")
    calls = count_runs(monkeypatch, decoder_module.NativeGreedy)
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=6)
    assert calls == [] and torch.equal(out, greedy_by_modules(model, torch.tensor([[1, 2, 3]]), 6))


@pytest.mark.parametrize("case", ["sample", "penalty", "mask", "batch"])
def test_other_choices_take_the_logits_way(monkeypatch, case):
    model = model_of("gpt2", "float32")
    calls = count_runs(monkeypatch, decoder_module.NativeGreedy)
    prompt = torch.tensor([[1, 2, 3]])
    options = {"sample": {"do_sample": True, "seed": 0}, "penalty": {"repetition_penalty": 1.3},
               "mask": {"attention_mask": torch.tensor([[0, 1, 1]])}, "batch": {}}[case]
    if case == "batch":
        prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert model.generate(prompt, max_new_tokens=4, **options).shape == (prompt.size(0), 7)
    assert calls == []


@pytest.mark.parametrize("change", ["moved", "replaced"])
def test_a_head_changed_during_generation_is_read_where_it_is_now(monkeypatch, change):
    """C held the head's addresses from the first step: after a move into shared memory (C would
    read freed memory) or ``weight.data = ...`` on an untied head between two steps (here by a
    streamer), the greedy steps must give way to the head's own product, which reads it anew."""

    def generate(greedy: bool):
        model = model_of("gpt2", "int8" if change == "moved" else "float32")
        if change == "replaced":
            model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untied

        class ChangesTheHead:
            steps = 0

            def put(self, tokens):
                self.steps += 1
                if self.steps == 3 and change == "moved":
                    model.lm_head.native[0].share_memory_()
                elif self.steps == 3:
                    model.lm_head.weight.data = torch.randn_like(model.lm_head.weight)

            def end(self):
                pass

        answers = []
        real = decoder_module.NativeGreedy.run
        with monkeypatch.context() as patch:
            if not greedy:
                patch.setattr(decoder_module.GreedyStep, "__call__", lambda self, ids, cache, steps=1: None)
            patch.setattr(decoder_module.NativeGreedy, "run", lambda self, ids, c, steps: answers.append(
                real(self, ids, c, steps)) or answers[-1])
            out = model.generate(torch.tensor([[1, 2]]), max_new_tokens=8, streamer=ChangesTheHead())
        return out, answers

    (fused, answers), (by_logits, _) = generate(True), generate(False)
    assert torch.equal(fused, by_logits)
    # the step after the prompt's ran in C; after the change (at the second new token) each gave way
    assert answers[0] is not None and answers[1:] == [None] * 6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_final_norm_of_one_row_runs_natively_anything_else_through_pytorch(dtype):
    layers = repo_module("models.layers")
    norm = layers.LayerNorm(128).to(dtype)
    with torch.no_grad():
        norm.weight.normal_(1, 0.5)
        norm.bias.normal_(0, 0.5)
    step = layers.final_norm_step(norm)
    assert isinstance(step, repo_module("models.native.norm").NativeNorm)
    x = (torch.randn(1, 1, 128) * 3 + 1).to(dtype)
    with torch.no_grad():
        got, wanted = step(x), norm(x)
        assert got.shape == x.shape and got.dtype == dtype
        torch.testing.assert_close(got.float(), wanted.float(), rtol=0, atol=0.02 if dtype == torch.bfloat16 else 1e-5)
        rows = torch.randn(3, 128).to(dtype)
        assert torch.equal(step(rows), norm(rows))  # several rows: PyTorch's
    x.requires_grad_(True)
    assert step(x).grad_fn is not None  # a gradient to keep: PyTorch's
    assert not isinstance(layers.final_norm_step(layers.LayerNorm(128, bias=False)),
                          repo_module("models.native.norm").NativeNorm)


def test_a_final_norm_off_the_cpu_asks_for_no_build(monkeypatch):
    """A model on a GPU bound its final norm by asking for the native build first: its first
    generate compiled C kernels (up to minutes, into the cache) that it could never run."""
    layers, norm_module = repo_module("models.layers"), repo_module("models.native.norm")
    monkeypatch.setattr(norm_module, "either_library", lambda: pytest.fail("a build was asked for"))
    norm = layers.LayerNorm(128, device="meta")
    assert not isinstance(layers.final_norm_step(norm), norm_module.NativeNorm)


def test_sampling_never_asks_for_the_heads_route(monkeypatch):
    """The head's route is asked for on a greedy step's first call only: a sampling run must not
    time the head's candidates for a step it will never take."""
    model = model_of("gpt2", "float32")
    monkeypatch.setattr(type(model.lm_head), "native_route", lambda self: pytest.fail("the head's route was asked for"))
    assert model.generate(torch.tensor([[1, 2]]), max_new_tokens=3, do_sample=True, seed=0).shape == (1, 5)


@pytest.mark.parametrize("between", ["streamer", "eos"])
def test_with_something_to_do_between_tokens_each_greedy_call_is_one_step(monkeypatch, between):
    model = model_of("gpt2", "float32")
    calls = count_runs(monkeypatch, decoder_module.NativeGreedy)
    seen = []

    class Streamer:
        def put(self, tokens):
            seen.append(tokens)

        def end(self):
            pass

    options = {"streamer": Streamer()} if between == "streamer" else {"eos_token_id": 63}  # (63: never chosen here)
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=6, **options)
    assert calls == [1] * 5 and torch.equal(out, greedy_by_modules(model, torch.tensor([[1, 2, 3]]), 6))
    if between == "streamer":
        assert len(seen) == 7 and torch.equal(torch.cat(seen[1:]), out[0, 3:])  # the prompt, then each token


def test_a_greedy_run_is_checked_for_all_its_positions_before_any_step():
    model = model_of("gpt2", "float32", n_positions=8)
    body, native = body_step(model)
    greedy = body.greedy(model.lm_head.native_route)
    with torch.no_grad():
        cache = kv_cache.StaticKVCache.for_model(model, 1, 6)
        cache.keys_values.fill_(7)  # C writes each step's keys and values: none must have been
        with pytest.raises(errors.InvalidArgumentError, match="holds 6 positions; 7 were asked for"):
            greedy(torch.tensor([[1]]), cache, 7)
        assert (cache.keys_values == 7).all()
        cache = kv_cache.StaticKVCache.for_model(model, 1, 20)
        cache.keys_values.fill_(7)
        with pytest.raises(errors.InvalidArgumentError, match="0 past plus 9 new positions exceed n_positions=8"):
            greedy(torch.tensor([[1]]), cache, 9)
        with pytest.raises(errors.InvalidArgumentError, match="at least one step, got 0"):
            greedy(torch.tensor([[1]]), cache, 0)
        assert cache.length == 0 and (cache.keys_values == 7).all()
        assert greedy(torch.tensor([[1]]), cache, 8).shape == (8,) and cache.length == 8


def test_a_head_choosing_among_more_tokens_than_the_embedding_has_takes_no_greedy_run():
    """C feeds each step's choice to the next unchecked: a head of more outputs than the token
    table has rows (an untied head, or a smaller table set since) could have it read past the
    table. Python checks each token it is given instead."""
    model = model_of("gpt2", "float32")
    width, vocabulary = model.config.n_embd, model.config.vocab_size
    body, native = body_step(model)
    with torch.no_grad():
        cache = kv_cache.StaticKVCache.for_model(model, 1, 4)
        assert native(torch.tensor([[1]]), cache) is not None  # the decoder, made
        layers = repo_module("models.layers")
        for outputs, made in ((vocabulary, True), (vocabulary + 8, False)):
            head = layers.Linear(width, outputs, bias=False)
            head.eval()
            product = head.native_route()
            assert product is not None
            assert (decoder_module.native_greedy(native._native, body.final_norm, product) is not None) == made


def caches_made(monkeypatch, forced: bool | None = None) -> list:
    """The dtype of each cache generate makes from now on; ``forced`` overrides ``for_model``'s ``compact``."""
    made, real = [], kv_cache.StaticKVCache.for_model.__func__

    def for_model(cls, model, batch, capacity, compact=False):
        cache = real(cls, model, batch, capacity, compact if forced is None else forced)
        made.append(cache.keys_values.dtype)
        return cache

    monkeypatch.setattr(kv_cache.StaticKVCache, "for_model", classmethod(for_model))
    return made


@pytest.mark.parametrize("kind", ["bfloat16", "int4 over bfloat16"])
def test_batch_1_steps_keep_bfloat16_keys_in_bfloat16_and_choose_the_same_tokens(monkeypatch, kind):
    """A float32 cache for bfloat16 keys and values (which it holds exactly) doubled what each
    step reads of it: at GPT-2's 1024 positions, 75 MB a token beside 249 MB of weights. The
    native steps now keep them in bfloat16 and compute the same (attention in float32 either way),
    past the positions where attention shares heads among threads."""
    model = model_of("gpt2", "bfloat16")
    if kind != "bfloat16":
        model = model.quantize("int4")
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    runs = [lambda: model.generate(prompt, max_new_tokens=STEPS),
            lambda: model.generate(prompt, max_new_tokens=STEPS, do_sample=True, seed=3),
            lambda: model.generate(prompt.repeat(2, 1), max_new_tokens=4)]  # a batch: float32, PyTorch's attention
    made = caches_made(monkeypatch)
    compact = [run() for run in runs]
    assert made == [torch.bfloat16, torch.bfloat16, torch.float32]
    made = caches_made(monkeypatch, forced=False)
    assert all(torch.equal(a, run()) for a, run in zip(compact, runs)) and made == [torch.float32] * 3


def test_pytorchs_attention_reads_a_bfloat16_cache_as_a_float32_one():
    """What a compact cache gives where PyTorch's attention reads it (a prompt, or steps that give
    way to the modules): the logits of a float32 cache, bit for bit."""
    model = model_of("gpt2", "bfloat16")
    ids = torch.randint(1, 64, (1, 12))
    logits = []
    for compact in (True, False):
        cache = kv_cache.StaticKVCache.for_model(model, 1, 12, compact=compact)
        with torch.no_grad():
            logits.append(torch.cat([model(ids[:, i:i + 3], past_key_values=cache).logits for i in range(0, 12, 3)], 1))
        assert cache.keys_values.dtype == (torch.bfloat16 if compact else torch.float32)
    assert torch.equal(*logits)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_generation_without_steps_makes_no_native_decoder(monkeypatch, dtype):
    """Choosing the cache asked for the native decoder of every batch-1 generate: one that makes a
    single token (the prompt's) never steps, and on a new machine paid for a build and timings."""
    made = []
    real = decoder_module.NativeDecoder.__init__
    monkeypatch.setattr(decoder_module.NativeDecoder, "__init__", lambda self, *a: made.append(1) or real(self, *a))
    model = model_of("gpt2", dtype)
    model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=1)
    assert made == []
    model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2)
    assert made == [1]
