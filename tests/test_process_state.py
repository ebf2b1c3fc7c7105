"""The library lives inside its user's process: while it loads and generates, another thread sees
no process-wide setting of torch change and no function of another module replaced."""

from __future__ import annotations

import threading
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY, TINY_GPT, models, repo_module

route_choice = repo_module("models.route_choice")

INIT_NAMES = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "constant_", "trunc_normal_",
              "xavier_uniform_")


def snapshot() -> dict:
    """What a thread beside the library reads of torch's process-wide state."""
    return {
        "mkldnn.enabled": torch.backends.mkldnn.enabled,
        "nn.init": tuple(getattr(nn.init, name) for name in INIT_NAMES),
        "F.linear": F.linear, "torch.bmm": torch.bmm, "torch.mv": torch.mv, "Module.__call__": nn.Module.__call__,
        "default dtype": torch.get_default_dtype(),
        "default device": str(torch.get_default_device()),
        "grad enabled": torch.is_grad_enabled(),
        "threads": torch.get_num_threads(),
    }


class Sampler(threading.Thread):
    """Reads ``snapshot()`` over and over until stopped; keeps every reading that differs.

    It yields the GIL after each reading: a thread that spins holding it leaves the library's
    thread waiting for the switch interval after every call that released it (the suite's two
    slowest tests took 77 s instead of 4), and yielding loses nothing: it reads whenever the
    library's thread lets go of the GIL, as it did before."""

    def __init__(self):
        super().__init__(daemon=True)
        self.expected = snapshot()
        self.changes: list[dict] = []
        self.readings = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            now = snapshot()
            self.readings += 1
            time.sleep(0)  # yield the GIL
            if now != self.expected:
                self.changes.append({k: v for k, v in now.items() if v != self.expected[k]})

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("state")
    torch.manual_seed(0)
    paths = {}
    for name, model in (("gpt2", models.GPT2LMHeadModel(models.GPT2Config(**TINY))),
                        ("gpt", models.OpenAIGPTLMHeadModel(models.OpenAIGPTConfig(**TINY_GPT)))):
        model.save_pretrained(folder / name)
        paths[name] = (type(model), folder / name)
    return paths


CASES = [(family, dtype, "measured") for family in ("gpt2", "gpt") for dtype in (torch.float32, torch.bfloat16, torch.float16)]
CASES += [("gpt2", dtype, "narrow") for dtype in (torch.float32, torch.bfloat16)]  # the native build's one-row products


@pytest.mark.parametrize("family, dtype, kernel", CASES)
def test_loading_and_generating_change_nothing_another_thread_sees(checkpoints, monkeypatch, family, dtype, kernel):
    monkeypatch.setattr(route_choice, "_chosen", {})
    if kernel != "measured":
        monkeypatch.setenv("GPT_HUB_KERNEL", kernel)
    model_class, path = checkpoints[family]
    with Sampler() as sampler:
        model = model_class.from_pretrained(path, torch_dtype=dtype)
        fresh = model_class.from_config(model.config, torch_dtype=dtype)
        for batch in (1, 8):
            ids = torch.randint(1, model.config.vocab_size, (batch, 6))
            mask = torch.ones_like(ids)
            mask[0, :2] = 0  # a left-padded row
            model.generate(ids, attention_mask=mask, max_new_tokens=8)
            fresh.generate(ids, max_new_tokens=4, do_sample=True, seed=0)
    assert sampler.readings > 10, sampler.readings
    assert sampler.changes == []


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="os.fork is POSIX only")
@pytest.mark.parametrize("module, name", [("models.route_choice", "_lock"), ("models.packed_weights", "_lock"),
                                          ("models.native.build", "_lock"), ("download.fetch", "_unreachable_lock")])
def test_a_child_forked_while_a_thread_holds_a_lock_gets_it_unlocked(module, name):
    """A fork while another thread measured kernels (holding route choice's lock) left the child's
    copy locked for good: its first generate after torch.set_num_threads(1) hung."""
    import os
    import signal

    lock = getattr(repo_module(module), name)
    held, release = threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    pid = os.fork()
    if pid == 0:  # the child: nothing but the lock, then out (no test machinery, no torch)
        signal.alarm(10)  # a hang ends the child with SIGALRM
        with lock:
            pass
        os._exit(0)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the child hung on {module}.{name}"
