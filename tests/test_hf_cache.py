"""Hub names are cached in Hugging Face's own layout: checked file by file, and both ways with
huggingface_hub as the oracle (it reads what we wrote; we load what it wrote, offline, with no
request). huggingface_hub is used by these tests only, never by the library."""

import hashlib
import json
import os

import pytest
import torch
from conftest import REPO, forbid_connections, repo_module, require, serve_gpt2
from fake_hub import git_blob_sha1

download = repo_module("download")
REPO_ID = "openai-community/gpt2"
FOLDER = "models--openai-community--gpt2"


def test_the_cache_is_laid_out_as_hugging_faces(hub):
    small, large = b'{"n_layer": 2}', os.urandom(5000)
    hub.add(REPO_ID, "config.json", small)
    hub.add(REPO_ID, "model.safetensors", large)
    hub.add(REPO_ID, "sub/dir/notes.txt", b"notes")
    for name in ("config.json", "model.safetensors", "sub/dir/notes.txt"):
        download.resolve_file(REPO_ID, [name])
    with pytest.raises(download.CheckpointNotFoundError):
        download.resolve_file(REPO_ID, ["added_tokens.json"])
    root, commit = download.hub_cache_dir() / FOLDER, hub.commit(REPO_ID)
    assert (root / "refs" / "main").read_bytes() == commit.encode()
    snapshot = root / "snapshots" / commit
    assert os.readlink(snapshot / "config.json") == f"../../blobs/{git_blob_sha1(small)}"
    assert os.readlink(snapshot / "model.safetensors") == f"../../blobs/{hashlib.sha256(large).hexdigest()}"
    assert os.readlink(snapshot / "sub" / "dir" / "notes.txt") == f"../../../../blobs/{git_blob_sha1(b'notes')}"
    assert (snapshot / "model.safetensors").read_bytes() == large
    assert (root / ".no_exist" / commit / "added_tokens.json").is_file()


def test_a_commit_is_used_as_it_is_and_never_asked_again(hub):
    hub.add(REPO_ID, "config.json", b"{}")
    commit = hub.commit(REPO_ID)
    path = download.resolve_file(REPO_ID, ["config.json"], revision=commit)
    requests = len(hub.log)
    assert download.resolve_file(REPO_ID, ["config.json"], revision=commit) == path and len(hub.log) == requests
    assert f"/snapshots/{commit}/config.json" in path


def test_the_url_cache_is_content_addressed_with_a_record_written_last(hub):
    hub.add("org/files", "data.bin", b"plain")
    url = f"{hub.endpoint}/org/files/resolve/main/data.bin"
    path = download.resolve_file(url, ["data.bin"])
    root = download.default_cache_dir()
    assert path == str(root / "blobs" / hashlib.sha256(b"plain").hexdigest())
    record = json.loads((root / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()}.json").read_text())
    assert record == {"url": url, "etag": git_blob_sha1(b"plain"), "size": 5, "sha256": hashlib.sha256(b"plain").hexdigest()}


def test_where_symlinks_cannot_be_made_snapshots_are_copies(hub, monkeypatch):
    hub.add(REPO_ID, "config.json", b"{}")

    def no_symlinks(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    path = download.resolve_file(REPO_ID, ["config.json"])
    assert not os.path.islink(path) and open(path, "rb").read() == b"{}"


def test_cache_dir_holds_both_caches(hub, tmp_path):
    hub.add(REPO_ID, "config.json", b"{}")
    by_name = download.resolve_file(REPO_ID, ["config.json"], cache_dir=tmp_path)
    by_url = download.resolve_file(f"{hub.endpoint}/{REPO_ID}/resolve/main/config.json", ["config.json"], cache_dir=tmp_path)
    assert by_name.startswith(str(tmp_path / FOLDER / "snapshots")) and by_url.startswith(str(tmp_path / "gpt_hub" / "blobs"))


def test_huggingface_hub_finds_what_we_downloaded(hub, tmp_path):
    hf = require("huggingface_hub")
    serve_gpt2(hub, tmp_path)
    names = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
    ours = {name: download.resolve_file("gpt2", [name]) for name in names}
    hub.stop()
    for name in names:
        theirs = hf.hf_hub_download(REPO_ID, name, local_files_only=True, cache_dir=download.hub_cache_dir())
        assert theirs == ours[name] and open(theirs, "rb").read() == open(ours[name], "rb").read()
    scan = hf.scan_cache_dir(download.hub_cache_dir())
    assert not scan.warnings and [r.repo_id for r in scan.repos] == [REPO_ID]
    assert {f.file_name for r in scan.repos for rev in r.revisions for f in rev.files} == set(names)


def test_what_huggingface_hub_downloaded_loads_offline_with_no_request(hub, tmp_path, monkeypatch):
    hf = require("huggingface_hub")
    checkpoint = serve_gpt2(hub, tmp_path)
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"):
        try:
            hf.hf_hub_download(REPO_ID, name, endpoint=hub.endpoint, cache_dir=download.hub_cache_dir())
        except hf.errors.EntryNotFoundError:
            assert name == "tokenizer_config.json"  # recorded in .no_exist by huggingface_hub
    hub.stop()
    served = len(hub.log)

    forbid_connections(monkeypatch, "a connection was opened")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = torch.hub.load(str(REPO), "gpt2LMHeadModel", "gpt2", source="local")
    tokenizer = torch.hub.load(str(REPO), "gpt2Tokenizer", "gpt2", source="local")
    reference = repo_module("models").GPT2LMHeadModel.from_pretrained(checkpoint)
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)
    assert tokenizer.encode("hello world") == [31373, 995] and len(hub.log) == served
