"""The download layer against an adversary: servers with faults on 127.0.0.1 (tests/fake_hub.py),
killed processes, a full disk, concurrent readers (issue 14), and the two download-layer items
of issue 18 (atomic writes honour the umask; a stray file does not hide a checkpoint name)."""

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import REPO, repo_module, serve_gpt2
from fake_hub import FakeHub, Fault, blob

download = repo_module("download")
http = repo_module("download.http")
REPO_ID = "openai-community/gpt2"


def get(name="data.bin", repo=REPO_ID, **options):
    with open(download.resolve_file(repo, [name], **options), "rb") as f:
        return f.read()


def partials():
    roots = [download.hub_cache_dir(), download.default_cache_dir()]
    return [p for root in roots if root.exists() for p in root.rglob("*.partial")]


def within(seconds, fn):
    """fn's result, or an AssertionError if it is still running after ``seconds`` (it is left behind)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


FETCH_URL = """
import importlib, importlib.util, sys
spec = importlib.util.spec_from_file_location("hubconf", sys.argv[1] + "/hubconf.py")
hub = importlib.util.module_from_spec(spec); spec.loader.exec_module(hub)
download = importlib.import_module(hub._PACKAGE + ".download")
print(download.resolve_file(sys.argv[2], ["data.bin"]))
"""


def start_and_kill(tmp_path, url, count=1, at=800_000):
    """Start ``count`` processes fetching ``url`` (no lock), wait until each partial holds ``at``
    bytes (the server stalls there), and kill them all."""
    script = tmp_path / "fetch.py"
    script.write_text(FETCH_URL)
    env = {**os.environ, "GPT_HUB_DISABLE_LOCK": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(REPO), url], stdout=subprocess.PIPE, env=env)
             for _ in range(count)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sizes = [p.stat().st_size for p in partials() if p.exists()]
        if len(sizes) == count and min(sizes) >= at:
            break
        time.sleep(0.1)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(partials()) == count


# 1 -----------------------------------------------------------------------------------------------

def test_the_token_goes_to_the_hub_host_only(hub, monkeypatch):
    other = FakeHub().start()  # another host: same address, another port
    try:
        for server in (hub, other):
            server.add("org/files", "data.bin", b"small")
            server.add("openai/gpt-2", "models/124M/hparams.json", b"{}")
        monkeypatch.setenv("HF_TOKEN", "secret")
        monkeypatch.setenv("GPT_HUB_OPENAI_GPT2_URL", f"{other.endpoint}/openai/gpt-2/resolve/main")
        get(repo=f"{other.endpoint}/org/files/resolve/main/data.bin")  # a plain URL elsewhere
        download.resolve_file("openai/124M", ["hparams.json"])  # OpenAI's release, from its own host
        get(repo="org/files")  # the hub itself
        assert [h.get("Authorization") for _, _, h in other.log] == [None] * len(other.log) and other.log
        assert {h.get("Authorization") for _, _, h in hub.log} == {"Bearer secret"}
    finally:
        other.stop()


# 2 -----------------------------------------------------------------------------------------------

def test_a_partial_of_a_killed_run_is_not_stitched_to_a_newer_version(hub, tmp_path):
    hub.LFS_FROM = 10**9  # served directly, ETag only: nothing but the validator protects the bytes
    hub.add("org/files", "data.bin", blob(2_000_000))
    hub.faults["data.bin"] = Fault(drop_after=800_000, stall=60)
    url = f"{hub.endpoint}/org/files/resolve/main/data.bin"
    start_and_kill(tmp_path, url)
    hub.faults.clear()
    hub.add("org/files", "data.bin", blob(2_000_000, seed=1))  # the file changes meanwhile
    assert get(repo=url) == blob(2_000_000, seed=1)
    assert "Range" not in hub.gets("data.bin")[-1] and not partials()


def test_a_206_with_another_validator_restarts_the_body(hub, waits):
    hub.LFS_FROM = 10**9
    hub.add("org/files", "data.bin", blob(200_000))
    hub.faults["data.bin"] = Fault(drop_after=140_000, drop_times=1, range_ignores_if_range=True,
                                   replace_after_first_get=blob(200_000, seed=2))
    assert get(repo=f"{hub.endpoint}/org/files/resolve/main/data.bin") == blob(200_000, seed=2)
    assert "Range" not in hub.gets("data.bin")[-1]  # the body restarted from zero


def test_a_refused_resume_starts_again_from_zero(hub, waits):
    hub.add(REPO_ID, "data.bin", blob(200_000))
    hub.faults["data.bin"] = Fault(drop_after=140_000, drop_times=1, range_status=416)
    assert get() == blob(200_000) and "Range" not in hub.gets("data.bin")[-1] and not partials()


# 3 -----------------------------------------------------------------------------------------------

def test_a_failed_pointer_write_keeps_the_previous_version(hub, monkeypatch):
    hub.add(REPO_ID, "data.bin", blob(5000))
    get()
    hub.add(REPO_ID, "data.bin", blob(6000, seed=1))
    roots = (str(download.hub_cache_dir()), str(download.default_cache_dir()))
    replace, calls = os.replace, []

    def failing(src, dst, *args, **kwargs):  # the disk fills up after the data file was placed
        if str(dst).startswith(roots):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        get()
    monkeypatch.setattr(os, "replace", replace)
    assert get(local_files_only=True) == blob(5000)  # offline: the old version, whole
    assert get() == blob(6000, seed=1)  # online: the new one


def test_readers_never_see_half_an_update(hub):
    hub.add(REPO_ID, "data.bin", blob(3000))
    get()
    versions = {blob(3000 + 1000 * (i % 2), seed=i) for i in range(1000)} | {blob(3000)}
    stop, errors, reads = threading.Event(), [], [0]

    def refresh():
        for i in range(1000):
            if stop.is_set():
                return
            hub.add(REPO_ID, "data.bin", blob(3000 + 1000 * (i % 2), seed=i))
            get()

    def read():
        while not stop.is_set():
            try:
                assert get(local_files_only=True) in versions
                reads[0] += 1
            except Exception as err:  # noqa: BLE001 - counted
                errors.append(repr(err))

    threads = [threading.Thread(target=refresh)] + [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert reads[0] > 50 and not errors, (reads, errors[:3], len(errors))


# 4 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [Fault(trickle=0.2), Fault(trickle_head=0.2)], ids=["body", "head"])
def test_a_trickling_server_cannot_hold_a_download(hub, waits, monkeypatch, fault):
    monkeypatch.setenv("GPT_HUB_MIN_RATE", "100")
    monkeypatch.setenv("GPT_HUB_RATE_WINDOW", "0.4")  # 40 bytes per 0.4 s at least; it sends 2
    hub.add(REPO_ID, "slow.json", b"{" + b" " * 600 + b"}")
    hub.faults["slow.json"] = fault
    start = time.monotonic()
    with pytest.raises(download.DownloadError, match="GPT_HUB_MIN_RATE|minimum rate"):
        within(30, lambda: get("slow.json"))
    assert time.monotonic() - start < 20


# 5 -----------------------------------------------------------------------------------------------

def test_compressing_servers_send_the_file_itself(hub):
    hub.add(REPO_ID, "data.bin", blob(100_000))
    hub.add(REPO_ID, "small.json", b"{" + b" " * 900 + b"}")
    for name in ("data.bin", "small.json"):
        hub.faults[name] = Fault(gzip=True)  # compresses whenever the client accepts gzip
    assert get() == blob(100_000) and get("small.json") == b"{" + b" " * 900 + b"}"
    assert get(repo=f"{hub.endpoint}/{REPO_ID}/resolve/main/data.bin") == blob(100_000)
    assert {h.get("Accept-Encoding") for _, _, h in hub.log} == {"identity"}
    hub.faults["data.bin"] = Fault(gzip_always=True)  # a server that compresses anyway: refused, not stored
    with pytest.raises(download.DownloadError, match="Content-Encoding gzip although identity was asked for"):
        get(force_download=True)
    assert get(local_files_only=True) == blob(100_000)


# 6 -----------------------------------------------------------------------------------------------

def test_attempts_that_make_progress_are_not_counted(hub, waits):
    hub.add(REPO_ID, "data.bin", blob(1_000_000))
    hub.faults["data.bin"] = Fault(drop_after=150_000)  # every connection drops: 7 of them
    assert get() == blob(1_000_000)


def test_a_partial_that_made_progress_survives_giving_up(hub, monkeypatch):
    hub.add(REPO_ID, "data.bin", blob(1_000_000))
    hub.faults["data.bin"] = Fault(drop_after=600_000, drop_times=1)

    def pause(seconds):  # after the first drop, the server sends nothing any more
        hub.faults["data.bin"] = Fault(drop_after=0)

    monkeypatch.setattr(http, "_pause", pause)
    with pytest.raises(download.DownloadError, match="600000 bytes received are kept"):
        get()
    hub.faults.clear()
    assert get() == blob(1_000_000)
    assert hub.gets("data.bin")[-1]["Range"] == "bytes=600000-" and not partials()


# 7 -----------------------------------------------------------------------------------------------

def test_a_partial_left_by_ctrl_c_is_not_leaked(hub, monkeypatch):
    hub.add(REPO_ID, "data.bin", blob(500_000))
    hub.faults["data.bin"] = Fault(drop_after=200_000, drop_times=1)

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(http, "_pause", interrupt)
    with pytest.raises(KeyboardInterrupt):
        get()
    assert get() == blob(500_000)  # the same, long-lived process
    assert hub.gets("data.bin")[-1]["Range"] == "bytes=200000-" and not partials()


def test_partials_of_several_killed_processes_are_cleaned(hub, tmp_path):
    hub.add(REPO_ID, "data.bin", blob(2_000_000))
    hub.faults["data.bin"] = Fault(drop_after=800_000, stall=60)
    start_and_kill(tmp_path, REPO_ID, count=3)
    hub.faults.clear()
    assert get() == blob(2_000_000)
    assert hub.gets("data.bin")[-1]["Range"] == "bytes=800000-" and not partials()


# 8 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["soon", "nan", "-inf", "Wed, 99 Foo 2020 99:99:99 GMT", "1e999"])
def test_a_malformed_retry_after_is_a_retry(hub, waits, value):
    hub.add(REPO_ID, "data.bin", blob())
    hub.faults["data.bin"] = Fault(statuses=[503], retry_after=value)
    assert get() == blob()
    assert waits and all(0 <= w <= http.RETRY_AFTER_CAP for w in waits)


# 9 -----------------------------------------------------------------------------------------------

def test_hub_down_with_a_warm_cache_loads_at_once(hub, tmp_path, caplog):
    serve_gpt2(hub, tmp_path)
    torch.hub.load(str(REPO), "gpt2LMHeadModel", "gpt2", source="local")
    torch.hub.load(str(REPO), "gpt2Tokenizer", "gpt2", source="local")
    hub.stop()  # refused from here on; HF_HUB_OFFLINE is not set
    caplog.clear()
    start = time.monotonic()
    tokenizer = torch.hub.load(str(REPO), "gpt2Tokenizer", "gpt2", source="local")
    torch.hub.load(str(REPO), "gpt2LMHeadModel", "gpt2", source="local")
    assert time.monotonic() - start < 2
    assert tokenizer.encode("hello world") == [31373, 995]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "could not reach" in r.getMessage()]
    assert len(warnings) == 1


def test_a_hub_answering_errors_falls_back_to_the_cache(hub, waits, caplog):
    hub.add(REPO_ID, "data.bin", blob())
    get()
    hub.faults["data.bin"] = Fault(statuses=[503] * 10)
    assert get() == blob() and "answered 503" in caplog.text and "using the cached files" in caplog.text
    with pytest.raises(download.DownloadError, match="503"):
        get(force_download=True)  # a fresh copy was asked for: no fallback


def test_a_dns_failure_is_not_retried_and_says_what_to_do(monkeypatch, waits):
    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid")
    with pytest.raises(download.DownloadError) as info:
        download.resolve_file("gpt2", ["config.json"])
    assert len(lookups) == 1 and not waits
    message = str(info.value)
    assert "Name or service not known" in message and "HF_HUB_OFFLINE=1" in message and "local directory" in message
    assert "Pool" not in message and "Connection(" not in message  # not the connection pool's innards


# A full disk -------------------------------------------------------------------------------------

def test_a_full_disk_names_the_folder_and_keeps_the_old_version(hub, monkeypatch):
    hub.add(REPO_ID, "data.bin", blob(5000))
    get()
    hub.add(REPO_ID, "data.bin", blob(6000, seed=1))
    hub.faults["data.bin"] = Fault(announce_size=10**15)
    with pytest.raises(download.DownloadError, match=f"needs {10**15} more bytes in ") as info:
        get()
    assert str(download.hub_cache_dir()) in str(info.value)
    assert not partials()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert get() == blob(5000)  # offline
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub.stop()
    assert get() == blob(5000)  # online, with the hub gone


# Issue 18 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)  # the test sets it; the library only lets the kernel apply it
    try:
        download.atomic_write(tmp_path / "saved.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "saved.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_stray_file_does_not_hide_a_checkpoint_name(hub, tmp_path, monkeypatch, caplog):
    hub.add(REPO_ID, "config.json", b'{"n_layer": 2}')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2").write_bytes(b"stray!")
    with caplog.at_level(logging.INFO):
        assert get("config.json", repo="gpt2") == b'{"n_layer": 2}'
    assert "ignoring the file" in caplog.text and str(tmp_path / "gpt2") in caplog.text
    (tmp_path / "gpt2").unlink()
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_bytes(b"{}")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert get("config.json", repo="gpt2") == b"{}"  # a local directory wins, as in Hugging Face's loaders
    assert "using the local directory" in caplog.text
