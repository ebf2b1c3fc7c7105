"""The download layer over real sockets: a local server imitating the hub (tests/fake_hub.py),
with faults injected by path. No mocks of requests."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, TINY, forbid_connections, need_shared_data, repo_module, serve_gpt2
from fake_hub import Fault, blob

download = repo_module("download")
http = repo_module("download.http")
transfer = repo_module("download.transfer")
REPO_ID = "openai-community/gpt2"


def cache_files():
    """Every file in both caches (the hub's and the URLs'), locks aside."""
    roots = [download.hub_cache_dir(), download.default_cache_dir()]
    return sorted(str(p.relative_to(root)) for root in roots if root.exists() for p in root.rglob("*")
                  if not p.is_dir() and ".locks" not in p.parts)


def blobs():
    return [name for name in cache_files() if "/blobs/" in name and not name.endswith(".partial")]


def no_leftovers():
    assert not [n for n in cache_files() if n.endswith(".partial")], cache_files()


def get(name="data.bin", repo=REPO_ID, **options):
    return open(download.resolve_file(repo, [name], **options), "rb").read()


def test_torch_hub_load_downloads_once_then_works_offline(hub, tmp_path, capsys, monkeypatch):
    serve_gpt2(hub, tmp_path)
    monkeypatch.setattr(transfer, "PROGRESS_FROM", 1)
    model = torch.hub.load(str(REPO), "gpt2LMHeadModel", "gpt2", source="local", progress=True)
    tokenizer = torch.hub.load(str(REPO), "gpt2Tokenizer", "gpt2", source="local")
    assert "model.safetensors" in capsys.readouterr().err  # the progress bar
    assert tokenizer.encode("hello world") == [31373, 995]
    assert model(torch.tensor([[1, 2]])).logits.shape == (1, 2, TINY["vocab_size"])
    snapshot = download.hub_cache_dir() / "models--openai-community--gpt2" / "snapshots" / hub.commit(REPO_ID)
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= {p.name for p in snapshot.iterdir()}
    gets = len(hub.gets("model.safetensors"))
    hub.stop()  # no network from here on
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = torch.hub.load(str(REPO), "gpt2LMHeadModel", "gpt2", source="local")
    torch.hub.load(str(REPO), "gpt2Tokenizer", "gpt2", source="local")
    assert torch.equal(again.lm_head.weight, model.lm_head.weight) and gets == 1


def test_unchanged_files_are_not_fetched_again_and_changed_ones_are(hub):
    hub.add(REPO_ID, "data.bin", blob())
    assert get() == blob()
    assert get() == blob() and len(hub.gets("data.bin")) == 1  # revalidated by ETag only
    hub.add(REPO_ID, "data.bin", blob(seed=1))
    assert get() == blob(seed=1) and len(hub.gets("data.bin")) == 2
    assert get(force_download=True) == blob(seed=1) and len(hub.gets("data.bin")) == 3


def test_a_dropped_body_resumes_with_range(hub, waits):
    hub.add(REPO_ID, "data.bin", blob(200_000))
    hub.faults["data.bin"] = Fault(drop_after=140_000, drop_times=1)
    assert get() == blob(200_000)
    second = hub.gets("data.bin")[-1]  # resumes after the last byte received
    assert second["Range"] == "bytes=140000-" and second["If-Range"].startswith('"blob-')
    no_leftovers()


def test_a_short_body_with_a_clean_close_resumes(hub, waits):
    hub.add(REPO_ID, "small.json", b"{" + b" " * 900 + b"}")  # small: served directly, not as a blob
    hub.faults["small.json"] = Fault(drop_after=300, drop_times=2)
    assert get("small.json") == b"{" + b" " * 900 + b"}"


def test_dropping_every_time_gives_up_cleanly(hub, waits):
    hub.add(REPO_ID, "data.bin", blob())
    hub.faults["data.bin"] = Fault(drop_after=0)
    with pytest.raises(download.DownloadError, match=f"kept failing after {http.ATTEMPTS} attempts without progress"):
        get()
    assert len(waits) == http.ATTEMPTS - 1 and not blobs()
    no_leftovers()


def test_an_ignored_range_restarts_cleanly(hub, waits):
    hub.add(REPO_ID, "data.bin", blob(100_000))
    hub.faults["data.bin"] = Fault(drop_after=40_000, drop_times=1, ignore_range=True)
    assert get() == blob(100_000)


def test_a_file_that_changes_between_attempts_is_fetched_whole(hub, waits):
    hub.add(REPO_ID, "data.bin", blob(100_000))
    hub.faults["data.bin"] = Fault(drop_after=40_000, drop_times=1, replace_after_first_get=blob(100_000, seed=7))
    assert get() == blob(100_000, seed=7)
    assert blobs() == [f"models--openai-community--gpt2/blobs/{hashlib.sha256(blob(100_000, seed=7)).hexdigest()}"]


@pytest.mark.parametrize("fault, message", [
    (Fault(extra_bytes=10), "sent more than"),
    (Fault(linked_sha256="0" * 64), "sha256"),
    (Fault(announce_size=10**15), "needs 1000000000000000 more bytes in .*, which has"),
    (Fault(etag='"' + "0" * 40 + '"'), "git blob SHA-1"),
])
def test_wrong_bodies_are_never_stored(hub, waits, fault, message):
    hub.add(REPO_ID, "data.bin", blob())
    hub.add(REPO_ID, "small.json", b"{}")
    name = "small.json" if fault.etag else "data.bin"
    hub.faults[name] = fault
    with pytest.raises(download.DownloadError, match=message):
        get(name)
    assert not blobs() and not [n for n in cache_files() if "/snapshots/" in n]
    no_leftovers()


def test_a_404_page_is_an_error_never_a_checkpoint(hub, hf_checkpoint):
    hub.add(REPO_ID, "config.json", (hf_checkpoint / "config.json").read_bytes())
    with pytest.raises(download.CheckpointNotFoundError, match="model.safetensors does not exist.*pytorch_model.bin does not exist"):
        repo_module("models").GPT2LMHeadModel.from_pretrained("gpt2")
    assert [n.rsplit("/", 1)[1] for n in blobs()] == [hashlib.sha1(b"blob %d\0" % len(hub.files[(REPO_ID, "main", "config.json")])
                                                                   + hub.files[(REPO_ID, "main", "config.json")]).hexdigest()]


def test_busy_servers_are_retried_honouring_retry_after(hub, waits):
    hub.add(REPO_ID, "data.bin", blob())
    hub.faults["data.bin"] = Fault(statuses=[503, 429, 500], retry_after="2")
    assert get() == blob()
    assert waits[:3] == [2.0, 2.0, 2.0]
    hub.faults["data.bin"] = Fault(statuses=[429], retry_after="3600")
    get(force_download=True)
    assert waits[-1] == http.RETRY_AFTER_CAP
    hub.faults["data.bin"] = Fault(statuses=[503] * 10)
    with pytest.raises(download.DownloadError, match="503"):
        get(force_download=True)


def test_a_redirect_loop_is_an_error(hub):
    hub.add(REPO_ID, "data.bin", blob())
    hub.faults["data.bin"] = Fault(redirect_loop=True)
    with pytest.raises(download.DownloadError, match="redirects more than 10 times"):
        get()


def test_a_stalled_body_times_out_and_never_hangs(hub, waits, monkeypatch):
    monkeypatch.setattr(http, "READ_TIMEOUT", 0.3)
    hub.add(REPO_ID, "data.bin", blob(100_000))
    hub.faults["data.bin"] = Fault(drop_after=10_000, stall=3)
    start = time.monotonic()
    with pytest.raises(download.DownloadError, match="kept failing"):
        get()
    assert time.monotonic() - start < 15


def test_server_down_with_and_without_a_cached_copy(hub, caplog, waits):
    hub.add(REPO_ID, "data.bin", blob())
    get()
    hub.stop()
    assert get() == blob()
    assert "using the cached files" in caplog.text
    with pytest.raises(download.CheckpointNotFoundError, match="other.bin is not in the cache .* could not be reached"):
        get("other.bin")  # the snapshot of the revision is cached, this file is not
    with pytest.raises(download.UnreachableError, match="could not reach .*HF_HUB_OFFLINE=1"):
        get(repo="org/never-fetched")


def test_offline_never_opens_a_socket(hub, monkeypatch):
    hub.add(REPO_ID, "data.bin", blob())
    get()
    requests_before = len(hub.log)

    forbid_connections(monkeypatch, "offline mode opened a connection")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert get() == blob()
    with pytest.raises(download.CheckpointNotFoundError, match="other.bin is not in the cache .* HF_HUB_OFFLINE"):
        get("other.bin")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(download.CheckpointNotFoundError, match="local_files_only=True"):
        get("other.bin", local_files_only=True)
    assert len(hub.log) == requests_before


def test_a_damaged_cached_file_is_detected(hub):
    hub.add(REPO_ID, "data.bin", blob())
    path = download.resolve_file(REPO_ID, ["data.bin"])
    with open(path, "ab") as f:
        f.write(b"junk")
    with pytest.raises(download.CacheCorruptedError, match="force_download=True"):
        get()
    assert get(force_download=True) == blob()


def test_disk_full_keeps_the_older_version(hub, monkeypatch):
    hub.add(REPO_ID, "data.bin", blob())
    get()
    hub.add(REPO_ID, "data.bin", blob(seed=3))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    write_body = transfer._write_body
    monkeypatch.setattr(transfer, "_write_body", full)
    with pytest.raises(download.DiskFullError, match=f"no space left in {download.hub_cache_dir()}.* it needs 5000 bytes"):
        get()
    no_leftovers()
    monkeypatch.setattr(transfer, "_write_body", write_body)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert get() == blob()  # the older version, intact


@pytest.mark.parametrize("name, kwargs", [
    ("../../etc/passwd", {}), ("org/../../x", {}), ("a\x00b", {}), (REPO_ID, {"revision": ".."}),
    ("/absolute/path/that/is/not/here", {}), ("org/name\x00", {}), ("org/name\n", {}),
])
def test_crafted_names_are_refused(hub, name, kwargs):
    with pytest.raises((download.InvalidNameError, download.CheckpointNotFoundError)):
        download.resolve_file(name, ["config.json"], **kwargs)
    assert not hub.log


def test_the_token_goes_to_the_hub_only(hub):
    hub.add(REPO_ID, "small.json", b"{}")
    hub.add(REPO_ID, "data.bin", blob())
    hub.redirect_host = "localhost"  # large files redirect to another host
    get("small.json", token="secret")
    get("data.bin", token="secret")
    sent = {(method, path.split("/")[1]): headers.get("Authorization") for method, path, headers in hub.log}
    assert sent[("GET", "openai-community")] == "Bearer secret"
    assert sent[("GET", "blobs")] is None and sent[("HEAD", "blobs")] is None


def test_token_true_or_false_as_transformers_takes_them(hub, monkeypatch):
    """token=True sent "Bearer True" (transformers reads it as: use HF_TOKEN); token=False sent
    HF_TOKEN anyway (transformers: no token)."""
    hub.add(REPO_ID, "a.json", b"{}")
    hub.add(REPO_ID, "b.json", b"{}")
    monkeypatch.setenv("HF_TOKEN", "from-the-environment")
    get("a.json", token=True)
    get("b.json", token=False, force_download=1)  # a flag may be 0/1 or a NumPy bool, as transformers allows
    sent = {path.rsplit("/", 1)[-1]: headers.get("Authorization") for method, path, headers in hub.log}
    assert sent == {"a.json": "Bearer from-the-environment", "b.json": None}
    hub.log.clear()  # without HF_TOKEN: the file `huggingface-cli login` writes; a flag is never sent as text
    monkeypatch.delenv("HF_TOKEN")
    (download.hub_cache_dir().parent / "token").write_text("from-the-login\n")
    get("a.json", token=1, force_download=True)
    assert {headers.get("Authorization") for _, _, headers in hub.log} == {"Bearer from-the-login"}


# The download layer alone, in a package of the repository's folder as hubconf.py makes one: it
# imports no torch, so eight processes start in a tenth of the time.
CONCURRENT = """
import importlib, importlib.machinery, importlib.util, sys
spec = importlib.machinery.ModuleSpec("_repository", None, is_package=True)
spec.submodule_search_locations = [sys.argv[1]]
sys.modules["_repository"] = importlib.util.module_from_spec(spec)
download = importlib.import_module("_repository.download")
print(download.resolve_file("openai-community/gpt2", ["data.bin"]))
assert "torch" not in sys.modules
"""


@pytest.mark.parametrize("lock", ["on", "off"])
def test_eight_processes_at_once(hub, tmp_path, lock):
    hub.add(REPO_ID, "data.bin", blob(3_000_000))
    hub.faults["data.bin"] = Fault(stall=0.3)
    script = tmp_path / "fetch.py"
    script.write_text(CONCURRENT)
    env = {**os.environ, "GPT_HUB_DISABLE_LOCK": "1" if lock == "off" else "0"}
    procs = [subprocess.Popen([sys.executable, str(script), str(REPO)], stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(8)]
    paths = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(paths) == 1
    assert open(paths.pop(), "rb").read() == blob(3_000_000)
    no_leftovers()
    if lock == "on":
        assert len(hub.gets("data.bin")) == 1


def test_a_killed_download_is_resumed_by_the_next_run(hub, tmp_path):
    hub.add(REPO_ID, "data.bin", blob(2_000_000))
    hub.faults["data.bin"] = Fault(drop_after=800_000, stall=60)
    script = tmp_path / "fetch.py"
    script.write_text(CONCURRENT)
    proc = subprocess.Popen([sys.executable, str(script), str(REPO)], stdout=subprocess.PIPE)
    deadline, size = time.monotonic() + 60, 0
    while time.monotonic() < deadline and size < 800_000:  # it stalls after 800 000 bytes
        partial = [n for n in cache_files() if n.endswith(".partial")]
        size = (download.hub_cache_dir() / partial[0]).stat().st_size if partial else 0
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    hub.faults.clear()
    assert get() == blob(2_000_000)
    assert hub.gets("data.bin")[-1]["Range"] == f"bytes={size}-"
    no_leftovers()


def test_urls_and_pinned_vocabulary_hashes(hub):
    vocab = need_shared_data() / "gpt2"
    hub.add(REPO_ID, "vocab.json", (vocab / "vocab.json").read_bytes())
    hub.add(REPO_ID, "merges.txt", b"#version: 0.2\nnot the real merges\n")
    folder_url = f"{hub.endpoint}/{REPO_ID}/resolve/main/"
    assert get("vocab.json", repo=folder_url) == (vocab / "vocab.json").read_bytes()
    assert open(download.resolve_file(folder_url + "vocab.json", ["vocab.json"]), "rb").read()[:1] == b"{"
    assert get("merges.txt").startswith(b"#version")  # a hub file is checked by the hub's validators, not a pin
    assert get("merges.txt", repo=folder_url).startswith(b"#version")  # a plain URL pins nothing
    names = repo_module("download.names")  # pins only for OpenAI's own hosts
    assert names.PINNED_SHA256 and all(url.startswith(("https://openaipublic.blob.core.windows.net/gpt-2/models/",
                                                       "https://raw.githubusercontent.com/openai/finetune-transformer-lm/"))
                                       for url in names.PINNED_SHA256)


def test_archive_maps_point_where_names_resolve(hub):
    maps = repo_module("models")
    assert set(maps.GPT2_PRETRAINED_MODEL_ARCHIVE_MAP) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"}
    assert maps.GPT2_PRETRAINED_MODEL_ARCHIVE_MAP["gpt2"].endswith("/openai-community/gpt2/resolve/main/model.safetensors")
    assert maps.GPT2_PRETRAINED_CONFIG_ARCHIVE_MAP["distilgpt2"].endswith("/distilbert/distilgpt2/resolve/main/config.json")
    assert maps.OPENAI_GPT_PRETRAINED_MODEL_ARCHIVE_MAP["openai-gpt"].endswith("/openai-community/openai-gpt/resolve/main/model.safetensors")
    hub.add("distilbert/distilgpt2", "config.json", b"{}")
    path = download.resolve_file("distilgpt2", ["config.json"])
    commit = hub.commit("distilbert/distilgpt2")
    assert path == str(download.hub_cache_dir() / "models--distilbert--distilgpt2" / "snapshots" / commit / "config.json")
