"""Shared fixtures: the repository loaded the way torch.hub loads it, tiny checkpoints, shared data."""

from __future__ import annotations

import functools
import gzip
import importlib
import json
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# `python -m pytest` puts the repository root on sys.path, where our `tokenizers` and `models`
# folders would shadow Hugging Face's packages of those names. The repository is only ever
# imported through hubconf's private package, as torch.hub does; take the root off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]


def _load_hubconf():
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hubconf = _load_hubconf()


def repo_module(name: str):
    """A module of this repository by its path inside it (``models.gpt2``)."""
    return importlib.import_module(f"{hubconf._PACKAGE}.{name}")


models = repo_module("models")


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the clone, or ``$GPT_HUB_SHARED_DATA``; None where absent."""
    path = Path(os.environ.get("GPT_HUB_SHARED_DATA", REPO.parent / "shared" / "data"))
    return path if path.is_dir() else None


def need_shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but ../shared/data (or $GPT_HUB_SHARED_DATA) is missing")
        pytest.skip("the real vocabularies are not here: put shared/data beside the clone or set GPT_HUB_SHARED_DATA")
    return path


def require(module: str):
    """Import a test-only dependency: skip where it is missing, but fail in CI, which installs it."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


@functools.lru_cache
def corpus_and_expected(model: str):
    """The corpus ({file: (text, lines)}, lines as splitlines(keepends=True)) and the expected
    ids of ``expected/{model}.jsonl.gz`` (one record per line and per whole file), read once."""
    data = need_shared_data()
    files = {}
    for path in sorted((data / "corpus").glob("*.txt")):
        text = path.read_bytes().decode("utf-8")
        files[path.name] = (text, text.splitlines(keepends=True))
    with gzip.open(data / "expected" / f"{model}.jsonl.gz", "rt", encoding="utf-8") as f:
        return files, [json.loads(line) for line in f]


def mismatches_with_expected(encode, model: str) -> list:
    """(file, line) of every record whose ids ``encode`` does not reproduce; line None is the whole file."""
    files, records = corpus_and_expected(model)
    assert len(records) > 79_000
    bad = []
    for record in records:
        text, lines = files[record["file"]]
        if encode(text if record["line"] is None else lines[record["line"]]) != record["ids"]:
            bad.append((record["file"], record["line"]))
    return bad


TINY = dict(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)


@pytest.fixture
def tiny_config():
    return models.GPT2Config(**TINY)


TINY_GPT = dict(vocab_size=99, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def make_hf_checkpoint(path: Path, hf_class: str = "GPT2LMHeadModel", seed: int = 0, **overrides) -> Path:
    """Save a tiny random model with Hugging Face transformers (the reference writer)."""
    transformers = require("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    if hf_class.startswith("OpenAIGPT"):
        config = transformers.OpenAIGPTConfig(**{**TINY_GPT, **overrides})
    else:
        config = transformers.GPT2Config(**{**TINY, **overrides})
    model = getattr(transformers, hf_class)(config).eval()
    model.save_pretrained(path)
    return path


@pytest.fixture
def hf_checkpoint(tmp_path):
    """A tiny GPT-2 LM checkpoint written by Hugging Face transformers."""
    return make_hf_checkpoint(tmp_path / "tiny-gpt2")


@pytest.fixture(scope="session")
def native_dir(tmp_path_factory):
    """One folder for the native kernels' builds for the whole session (and its subprocesses):
    each test's own TORCH_HOME would make every process compile them again."""
    return tmp_path_factory.mktemp("native")


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path_factory, native_dir):
    """Every test: seeded, its own download cache, and the hub pointed at a closed local port
    (tests that need a hub start their own), so nothing reaches the network by accident."""
    torch.manual_seed(0)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))  # the hub cache: HF_HOME/hub
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(native_dir))
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE", "GPT_HUB_DISABLE_LOCK", "GPT_HUB_MIN_RATE",
                 "GPT_HUB_RATE_WINDOW"):
        monkeypatch.delenv(name, raising=False)
    yield



def predicting_checkpoint(folder: Path, model_class, config, token_id: int, vocab_dir: Path) -> Path:
    """A random model whose language-model head predicts ``token_id`` everywhere, saved with the
    vocabulary files: the final LayerNorm outputs a constant aligned with that token's embedding
    (whose row is made the longest), so the hub pages' asserts can run on a local checkpoint."""
    import shutil

    model = model_class.from_config(config)
    embedding = model.get_input_embeddings().weight
    final_norm = model.transformer.ln_f if hasattr(model.transformer, "ln_f") else model.transformer.h[-1].ln_2
    with torch.no_grad():
        embedding[token_id] *= 10
        final_norm.weight.zero_()
        final_norm.bias.copy_(embedding[token_id])
    model.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(vocab_dir / name, folder / name)
    return folder


@pytest.fixture
def hub(monkeypatch):
    """A local imitation of the Hugging Face hub (tests/fake_hub.py), as ``HF_ENDPOINT``."""
    from fake_hub import FakeHub

    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server
    server.stop()


@pytest.fixture
def waits(monkeypatch):
    """The download layer's waits between attempts, recorded instead of slept."""
    recorded = []
    monkeypatch.setattr(repo_module("download.http"), "_pause", recorded.append)
    return recorded


def serve_gpt2(hub, folder: Path) -> Path:
    """A tiny GPT-2 checkpoint (made in ``folder``) and the real vocabulary, served by ``hub`` as
    openai-community/gpt2, the repository the name ``gpt2`` stands for."""
    checkpoint = make_hf_checkpoint(folder / "ckpt")
    vocab = need_shared_data() / "gpt2"
    for name in ("config.json", "model.safetensors"):
        hub.add("openai-community/gpt2", name, (checkpoint / name).read_bytes())
    for name in ("vocab.json", "merges.txt"):
        hub.add("openai-community/gpt2", name, (vocab / name).read_bytes())
    return checkpoint


def forbid_connections(monkeypatch, message: str = "a connection was opened") -> None:
    """Make any attempt to open a network connection fail the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(message)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


OPENAI_FIXTURES = Path(__file__).parent / "fixtures" / "openai"


def release_copy(tmp_path: Path, name: str = "gpt2") -> Path:
    """A copy of one of OpenAI's release fixtures (tests/fixtures/openai/NAME), free to damage."""
    import shutil

    folder = tmp_path / name
    shutil.copytree(OPENAI_FIXTURES / name, folder)
    return folder


def need_compiler():
    """Skip where the native kernels cannot be built (no C compiler, not x86-64), except in CI."""
    build = repo_module("models.native.build")
    if build.compiler() is None or os.uname().machine not in ("x86_64", "AMD64"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI has gcc on x86-64: the native kernels must build there")
        pytest.skip("no C compiler, or not x86-64: the native kernels are not built here")


def fresh_kernel_choices(monkeypatch, folder, forced: str | None = None) -> None:
    """No kernel choice kept, in this process or in a file (the test's own ``folder`` holds one),
    and ``GPT_HUB_KERNEL`` set to ``forced`` (unset for None): the choices are measured again."""
    route_choice = repo_module("models.route_choice")
    monkeypatch.setattr(route_choice, "_chosen", {})
    monkeypatch.setattr(route_choice, "_record", lambda: folder / "choices.json")
    if forced:
        monkeypatch.setenv("GPT_HUB_KERNEL", forced)
    else:
        monkeypatch.delenv("GPT_HUB_KERNEL", raising=False)


def need_kernel(name: str) -> None:
    """Skip where the native build a kernel name (``wide``, ``narrow-rows``...) asks for is not
    made on this CPU: ``wide`` is AVX-512's, and a CPU without it has only ``narrow``."""
    need_compiler()
    variant = name.partition("-")[0]
    if variant in ("wide", "narrow") and not repo_module("models.native.build").builds_here(variant):
        pytest.skip(f"this CPU has no AVX-512: there is no {variant} build here")


@pytest.fixture
def narrow():
    """The native kernels' AVX2 build, loaded (its name)."""
    need_compiler()
    if not repo_module("models.native.products").available("narrow"):
        pytest.fail("the narrow build did not load")
    return "narrow"


_PEAK_PREAMBLE = textwrap.dedent("""
    import importlib, importlib.util, sys, torch
    spec = importlib.util.spec_from_file_location("hubconf", sys.argv[1] + "/hubconf.py")
    hub = importlib.util.module_from_spec(spec); spec.loader.exec_module(hub)
    package = hub._PACKAGE

    def status(key):  # kB -> bytes
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    def growth_from_here():  # the peak (VmHWM) reset to the current size; a function: how far it rose since
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        return lambda: status("VmHWM") - before
""")


def peak_script(folder: Path, body: str, *args: str) -> list[int]:
    """``body`` run in a new Python after a preamble that imports this repository's package (its
    name in ``package``) and defines ``growth_from_here()`` (Linux's peak resident memory); the
    integers it prints."""
    script = folder / "peak.py"
    script.write_text(_PEAK_PREAMBLE + textwrap.dedent(body))
    result = subprocess.run([sys.executable, str(script), str(REPO), *args], capture_output=True, text=True,
                            check=True)
    return [int(word) for word in result.stdout.split()]
