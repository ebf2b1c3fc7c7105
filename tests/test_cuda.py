"""On a CUDA GPU: every path a user takes there gives what it gives on the CPU, and what Hugging
Face gives on the same GPU. Skipped where PyTorch sees no GPU (CI has none); run it on a machine
with one: ``python -m pytest tests/test_cuda.py``. ``GPT_HUB_TEST_DEVICE=cpu`` runs the same checks
on the CPU (the tests' own logic, without a GPU)."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import REPO, TINY, TINY_GPT, hubconf, make_hf_checkpoint, models, repo_module, require

GPU = torch.device(os.environ.get("GPT_HUB_TEST_DEVICE", "cuda:0"))
pytestmark = pytest.mark.skipif(GPU.type == "cuda" and not torch.cuda.is_available(),
                                reason="PyTorch sees no CUDA GPU here")
CUDA = GPU.type == "cuda"
ATOL = 1e-4  # float32 on the GPU against the CPU (other reduction orders)
# how far below the best score a generated token's may be in a full forward in another dtype (the
# steps' logits were rounded otherwise; a tiny model's scores differ by about 0.1)
SLACK = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    difference = (a.float().cpu() - b.float().cpu()).abs().max().item()
    assert difference <= atol, difference


def ids(*shape, high=TINY["vocab_size"]) -> torch.Tensor:
    return torch.randint(1, high, shape)


def hf_and_ours(folder, name: str, **overrides):
    """Hugging Face's model and ours with the same random weights, both on the GPU, and ours on the CPU."""
    transformers = require("transformers")
    path = make_hf_checkpoint(folder / name, name, **overrides)
    hf = getattr(transformers, name).from_pretrained(path).eval().to(GPU)
    return hf, getattr(models, name).from_pretrained(path, device_map=GPU), getattr(models, name).from_pretrained(path)


def follows_its_own_argmax(model, tokens: torch.Tensor, prompt: int, mask: torch.Tensor | None = None) -> None:
    """Each generated token is a best-scoring one of the full forward over what came before it
    (a tie broken otherwise, or a near-tie rounded otherwise, is still a right answer)."""
    with torch.no_grad():
        logits = model(tokens, attention_mask=mask).logits[:, prompt - 1:-1].float()  # [B, new, V]
    chosen = logits.gather(-1, tokens[:, prompt:, None])[..., 0]
    assert bool((chosen >= logits.amax(-1) - SLACK[model.dtype]).all())


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification",
                                  "OpenAIGPTLMHeadModel", "OpenAIGPTDoubleHeadsModel"])
def test_every_head_matches_hugging_face_and_the_cpu(tmp_path, name):
    overrides = dict(num_labels=3, pad_token_id=0) if "Sequence" in name else {}
    hf, ours, on_cpu = hf_and_ours(tmp_path, name, **overrides)
    high = TINY_GPT["vocab_size"] if name.startswith("OpenAI") else TINY["vocab_size"]
    x = ids(2, 3, 9, high=high) if "Double" in name else ids(2, 9, high=high)
    kwargs = {"labels": x}
    if "Double" in name:
        kwargs.update(mc_token_ids=torch.tensor([[8, 5, 2], [0, 8, 7]]), mc_labels=torch.tensor([2, 0]))
    elif "Sequence" in name:
        kwargs = {"labels": torch.tensor([0, 2])}
    on_gpu = {key: value.to(GPU) for key, value in kwargs.items()}
    with torch.no_grad():
        theirs, mine, cpu = hf(x.to(GPU), **on_gpu), ours(x.to(GPU), **on_gpu), on_cpu(x, **kwargs)
    for field in ("logits", "mc_logits", "loss", "mc_loss"):
        if getattr(theirs, field, None) is not None:
            assert getattr(mine, field).device == GPU
            close(getattr(mine, field), getattr(theirs, field))
            close(getattr(mine, field), getattr(cpu, field))


def test_the_cache_and_left_padding_on_the_gpu(tmp_path):
    _, model, on_cpu = hf_and_ours(tmp_path, "GPT2LMHeadModel")
    x = ids(3, 9)
    mask = torch.ones_like(x)
    mask[1, :4] = 0
    mask[2, :2] = 0
    real = mask.bool()
    with torch.no_grad():
        whole = model(x.to(GPU), attention_mask=mask.to(GPU)).logits
        close(whole[real], on_cpu(x, attention_mask=mask).logits[real])
        out = model(x[:, :6].to(GPU), attention_mask=mask[:, :6].to(GPU))  # then one token at a time
        steps = [out.logits]
        for t in range(6, 9):
            out = model(x[:, t:t + 1].to(GPU), past=out.past_key_values, attention_mask=mask[:, :t + 1].to(GPU))
            steps.append(out.logits)
        close(torch.cat(steps, 1)[real], whole[real])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_greedy_generation_on_the_gpu(tmp_path, dtype):
    _, model, on_cpu = hf_and_ours(tmp_path, "GPT2LMHeadModel")
    model = model.to(dtype)
    prompt = ids(1, 3)
    tokens = model.generate(prompt.to(GPU), max_new_tokens=20)
    assert tokens.device == GPU and tokens.shape == (1, 23) and torch.equal(tokens[:, :3].cpu(), prompt)
    follows_its_own_argmax(model, tokens, 3)
    if dtype == torch.float32:
        assert torch.equal(tokens.cpu(), on_cpu.generate(prompt, max_new_tokens=20))

        class NumpyStreamer:  # transformers hands a streamer CPU tensors; one may call .numpy()
            def __init__(self):
                self.seen = []

            def put(self, value):
                self.seen += value.numpy().reshape(-1).tolist()

            def end(self):
                pass

        streamer = NumpyStreamer()
        model.generate(prompt.to(GPU), max_new_tokens=20, streamer=streamer)
        assert streamer.seen == tokens[0].tolist()


def test_a_left_padded_batch_gives_each_row_what_it_gives_alone(tmp_path):
    _, model, _ = hf_and_ours(tmp_path, "GPT2LMHeadModel")
    x = ids(3, 6).to(GPU)
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    batch = model.generate(x, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    for row in range(3):
        alone = model.generate(x[row:row + 1, mask[row].bool()], max_new_tokens=8)
        assert torch.equal(batch[row, -8:], alone[0, -8:]), row


def test_sampling_on_the_gpu_repeats_with_a_seed(tmp_path):
    _, model, _ = hf_and_ours(tmp_path, "GPT2LMHeadModel")
    prompt = ids(2, 4).to(GPU)
    options = dict(max_new_tokens=12, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.3)
    first = model.generate(prompt, seed=5, **options)
    assert torch.equal(first, model.generate(prompt, seed=5, **options))
    generator = torch.Generator(device=GPU).manual_seed(5)
    assert model.generate(prompt, generator=generator, **options).device == GPU
    if CUDA:
        with pytest.raises(ValueError, match=f"generator is on cpu and the model on {GPU}"):
            model.generate(prompt, generator=torch.Generator().manual_seed(5), **options)
        with pytest.raises(ValueError, match=f"input_ids is on cpu and the model on {GPU}"):
            model.generate(prompt.cpu(), max_new_tokens=2)


def test_moving_between_the_cpu_and_the_gpu_keeps_generation(tmp_path):
    """Copies made for the CPU kernels (packed weights, bound steps) must not outlive a move."""
    _, _, model = hf_and_ours(tmp_path, "GPT2LMHeadModel")
    for dtype in (torch.float32, torch.bfloat16):
        model = model.to(dtype)
        prompt = ids(1, 4)
        before = model.generate(prompt, max_new_tokens=10)
        follows_its_own_argmax(model.to(GPU), model.generate(prompt.to(GPU), max_new_tokens=10), 4)
        assert torch.equal(model.to("cpu").generate(prompt, max_new_tokens=10), before)


def test_saving_from_the_gpu_and_loading_onto_it(tmp_path):
    _, model, on_cpu = hf_and_ours(tmp_path, "GPT2LMHeadModel")
    model.save_pretrained(tmp_path / "saved")
    again = models.GPT2LMHeadModel.from_pretrained(tmp_path / "saved")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), on_cpu.state_dict().values()))
    for where in ("cuda", 0, "cuda:0", "auto", GPU, {"": 0}) if CUDA else (GPU,):
        assert models.GPT2LMHeadModel.from_pretrained(tmp_path / "saved", device_map=where).device == GPU, where
    entry = torch.hub.load(str(REPO), "gpt2LMHeadModel", str(tmp_path / "saved"), source="local", device_map=GPU,
                           torch_dtype=torch.bfloat16)
    assert {(p.device, p.dtype) for p in entry.parameters()} == {(GPU, torch.bfloat16)}
    fresh = hubconf.gpt2LMHeadModel("gpt2", pretrained=False, n_layer=1, n_embd=64, n_head=2, vocab_size=128,
                                    device_map=GPU)
    assert fresh.device == GPU


@pytest.mark.skipif(not CUDA, reason="the GPU's own refusal")
def test_quantized_models_stay_on_the_cpu_and_say_so(tmp_path):
    _, model, on_cpu = hf_and_ours(tmp_path, "GPT2LMHeadModel")
    with pytest.raises(ValueError, match="quantize needs a float32 or bfloat16 model on the CPU"):
        model.quantize("int8")
    on_cpu.quantize("int8")
    with pytest.raises(ValueError, match="a quantized model runs on the CPU"):
        on_cpu.to(GPU)
    assert on_cpu.device == torch.device("cpu") and on_cpu.generate(ids(1, 3), max_new_tokens=3).shape == (1, 6)
    on_cpu.save_pretrained(tmp_path / "int8")
    assert models.GPT2LMHeadModel.from_pretrained(tmp_path / "int8", device_map="auto").device == torch.device("cpu")
    with pytest.raises(ValueError, match=r"the checkpoint is quantized \(int8\), which runs on the CPU"):
        models.GPT2LMHeadModel.from_pretrained(tmp_path / "int8", device_map="cuda")


def test_fine_tuning_on_the_gpu(tmp_path):
    """One process trains where the model is, in float32 and with bfloat16 autocast, and the
    loss falls; the model stays on the GPU."""
    loop, tasks = repo_module("training.loop"), repo_module("training.tasks")
    from test_finetune import byte_level_checkpoint

    folder = byte_level_checkpoint(tmp_path / "base", dropout=0.0)
    (tmp_path / "train.txt").write_text("\n".join("the cat sat on the mat and the dog ran" for _ in range(64)))
    tokenizer = repo_module("tokenizers").GPT2Tokenizer.from_pretrained(folder)
    for bf16 in (False, True):
        model = models.GPT2LMHeadModel.from_pretrained(folder, device_map=GPU)
        task = tasks.language_modelling(model, tokenizer, [str(tmp_path / "train.txt")], [str(tmp_path / "train.txt")],
                                        32)
        history = loop.train(model, task, loop.Options(output_dir=str(tmp_path / f"out-{bf16}"), epochs=3,
                                                       batch_size=8, lr=3e-3, bf16=bf16))
        assert model.device == GPU
        assert history[-1]["perplexity"] < 0.5 * history[0]["perplexity"], history


def test_the_command_line_on_the_gpu(tmp_path, capsys):
    """``--device`` puts generate and score where it says; both give what they give on the CPU."""
    from test_finetune import byte_level_checkpoint

    cli = repo_module("cli.main")
    folder = byte_level_checkpoint(tmp_path / "base", dropout=0.0)
    (tmp_path / "text.txt").write_text("the cat sat on the mat and the dog ran " * 4)
    printed = {}
    for device in ("cpu", str(GPU)):
        assert cli.main(["score", "--model", str(folder), str(tmp_path / "text.txt"), "--device", device]) == 0
        score = capsys.readouterr().out
        assert cli.main(["generate", "--model", str(folder), "--prompt", "the cat", "--max-new-tokens", "6",
                         "--device", device]) == 0
        printed[device] = (float(score.split()[1]), capsys.readouterr().out)
    (cpu_score, cpu_text), (gpu_score, gpu_text) = printed["cpu"], printed[str(GPU)]
    assert gpu_score == pytest.approx(cpu_score, rel=1e-4) and gpu_text.startswith("the cat") and cpu_text
