"""Faults around the native kernels (models/native) and the choice of kernel
(models/route_choice.py): compilers that are odd, hang or build what will not load, caches that
are damaged or shared, operands whose memory goes away, candidates that fail when measured.

Whatever happens, the process must not crash, print, or keep a half-written file in the cache,
and bad input must be a library error. Cases that crashed the process run in a child Python, so
that a crash fails the test rather than the run."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import need_compiler, repo_module

build = repo_module("models.native.build")
products = repo_module("models.native.products")
route_choice = repo_module("models.route_choice")
errors = repo_module("errors")

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No build loaded yet in this process, and a cache folder of its own."""
    monkeypatch.setattr(build, "_loaded", {})
    folder = tmp_path / "native"
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(folder))
    monkeypatch.delenv("GPT_HUB_NATIVE", raising=False)
    return folder


def fake_compiler(folder: Path, name: str, body: str) -> str:
    """A shell script that answers ``--version`` and otherwise runs ``body`` with ``$out`` the
    output it was asked for; its path."""
    script = folder / name
    script.write_text(textwrap.dedent("""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "fake cc 1.0"; exit 0; fi
        for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
        """) + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def isolated(body: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    """``body`` run in a new Python, with ``torch``, ``build`` and ``products`` imported."""
    preamble = textwrap.dedent(f"""\
        import sys, threading, time
        sys.path.insert(0, {str(TESTS)!r})
        import torch
        from conftest import repo_module
        build = repo_module("models.native.build")
        products = repo_module("models.native.products")
        """)
    return subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(body)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


def assert_survived(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"the child Python ended with {result.returncode}:\n{result.stdout}\n" \
                                   f"{result.stderr[-3000:]}"


# -- the compiler --------------------------------------------------------------------------------

def test_cc_is_read_as_a_command_line(fresh, monkeypatch, tmp_path):
    """A blank $CC raised IndexError; a quoted path with a space was split on the space (and
    another compiler silently taken)."""
    need_compiler()
    monkeypatch.setenv("CC", " ")
    assert build.compiler() in ("cc", "gcc", "clang")
    tools = tmp_path / "my tools"
    tools.mkdir()
    (tools / "gcc").symlink_to(shutil.which("gcc") or pytest.skip("no gcc"))
    cc = f"'{tools / 'gcc'}' -m64"
    monkeypatch.setenv("CC", cc)
    assert build.compiler() == cc
    assert build.library("narrow") is not None


def test_cc_arguments_are_part_of_the_build_name(tmp_path):
    """"gcc -O0" (or -m32, -fsanitize=...) builds another library than "gcc": it used the same
    cached file."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    names = {build.library_path(build.BASE_FLAGS, cc, tmp_path) for cc in ("gcc", "gcc -O0", "gcc -m64")}
    assert len(names) == 3


def test_a_compiler_that_prints_undecodable_bytes_still_builds(fresh, monkeypatch, tmp_path):
    """``--version`` output that is not UTF-8 raised UnicodeDecodeError out of library()."""
    need_compiler()
    gcc = shutil.which("gcc") or pytest.skip("no gcc")
    script = tmp_path / "odd-cc"
    script.write_text(f'#!/bin/sh\nprintf "\\377\\376 odd cc\\n"\nprintf "\\377\\n" >&2\nexec {gcc} "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    assert build.library("narrow") is not None


def test_a_hung_compiler_is_killed_with_its_children_leaves_nothing_and_is_not_tried_again(
        fresh, monkeypatch, tmp_path):
    """Only the driver was killed at the timeout: its children lived on and wrote a half-made
    file into the cache after the library had moved on; and the other build then waited the
    whole timeout again."""
    calls, marker = tmp_path / "calls", tmp_path / "survived"
    cc = fake_compiler(tmp_path, "hung-cc", f"""\
        echo x >> '{calls}'
        (sleep 1; echo partial > "$out"; echo yes > '{marker}') &
        sleep 5
        """)
    monkeypatch.setenv("CC", cc)
    monkeypatch.setattr(build, "COMPILE_TIMEOUT_S", 0.5)
    start = time.monotonic()
    assert build.library("narrow") is None and build.library("wide") is None
    assert time.monotonic() - start < 4
    time.sleep(1.5)  # when the children would have written
    assert files_in(fresh) == [] and not marker.exists()
    assert calls.read_text().count("x") == 1


@pytest.mark.parametrize("how", ["exits 0 with no library", "fails on a full disk"])
def test_a_build_that_does_not_load_never_enters_the_cache(fresh, monkeypatch, tmp_path, caplog, how):
    """A compiler that "succeeds" with a file that will not load (a wrapper's bug, a cross
    compiler, $CC with -m32) left that file in the cache: every process then warned, rebuilt
    and failed again."""
    body = 'echo "not a library" > "$out"; exit 0' if how.startswith("exits") else \
        'head -c 1000 /dev/zero > "$out"; echo "No space left on device" >&2; exit 1'
    monkeypatch.setenv("CC", fake_compiler(tmp_path, "bad-cc", body))
    with caplog.at_level(logging.INFO):
        assert build.library("narrow") is None
    assert "unavailable" in caplog.text
    assert files_in(fresh) == []


def test_temporaries_left_by_killed_builds_are_removed(fresh):
    """A process killed mid-build leaves its temporary file; nothing removed it."""
    need_compiler()
    fresh.mkdir(parents=True)
    old = fresh / f".decode-{'a' * 20}.so.12345.{'b' * 12}.tmp"
    young = fresh / f".decode-{'a' * 20}.so.12346.{'c' * 12}.tmp"  # maybe another process's build
    old_choices = fresh / f".choices-{'d' * 16}.json.12347.{'e' * 12}.tmp"  # a killed choices write
    mine = fresh / "notes.tmp"
    for path in (old, young, old_choices, mine):
        path.write_bytes(b"\x7fELF half")
    long_ago = time.time() - 24 * 3600
    for path in (old, old_choices, mine):
        os.utime(path, (long_ago, long_ago))
    assert build.library("narrow") is not None
    assert not old.exists() and not old_choices.exists() and young.exists() and mine.exists()


def test_a_sanitizer_in_cc_does_not_abort_the_process(tmp_path):
    """CC="gcc -fsanitize=address" built a library whose ASan runtime, loaded by dlopen,
    aborted the Python process ("ASan runtime does not come first")."""
    need_compiler()
    probe = tmp_path / "probe.c"
    probe.write_text("int f(void) { return 1; }\n")
    if subprocess.run(["gcc", "-fsanitize=address", "-shared", "-fPIC", str(probe), "-o", str(tmp_path / "p.so")],
                      capture_output=True).returncode != 0:
        pytest.skip("gcc here cannot build with -fsanitize=address")
    result = isolated("""\
        lib = build.library("narrow")
        print("loaded" if lib is not None else "none")
        """, CC="gcc -fsanitize=address", GPT_HUB_NATIVE_DIR=str(tmp_path / "native"))
    assert_survived(result)
    assert result.stdout.strip() == "loaded"


def test_a_build_cut_short_is_rebuilt_not_mapped(tmp_path):
    """A cached library cut short (an interrupted copy, a damaged disk) killed the process
    with SIGBUS inside dlopen, before the rebuild could be tried."""
    need_compiler()
    result = isolated(f"""\
        import os
        from pathlib import Path
        flags = build.BASE_FLAGS + build.VARIANTS["narrow"]
        build.load(flags, Path({str(tmp_path / "elsewhere")!r}))
        whole = next(Path({str(tmp_path / "elsewhere")!r}).glob("decode-*.so")).read_bytes()
        path = build.library_path(flags, build.compiler(), build.native_dir())
        path.parent.mkdir(parents=True)
        for fraction in (0.2, 0.5):
            build._loaded.clear()
            cut = path.with_name("cut")  # a new file: one loaded here must never be cut in place
            cut.write_bytes(whole[:int(len(whole) * fraction)])
            os.replace(cut, path)
            assert build.library("narrow") is not None
            assert path.stat().st_size == len(whole), path.stat().st_size
        print("rebuilt")
        """, GPT_HUB_NATIVE_DIR=str(tmp_path / "native"))
    assert_survived(result)
    assert result.stdout.strip() == "rebuilt"


def test_two_processes_building_at_once(tmp_path):
    """(Held before too.) Both load a build; one file is left, no temporaries."""
    need_compiler()
    folder = tmp_path / "shared cache"
    code = textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import repo_module
        build = repo_module("models.native.build")
        assert build.library("narrow") is not None
        """)
    env = {**os.environ, "GPT_HUB_NATIVE_DIR": str(folder)}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, stderr.decode()[-2000:]
    names = files_in(folder)
    assert len(names) == 1 and names[0].startswith("decode-") and names[0].endswith(".so")


def test_functions_of_another_library_with_the_kernels_names_are_not_called(tmp_path, monkeypatch):
    """A library loaded with RTLD_GLOBAL before the kernels that exports a function of the same
    name (``layer_norm_row``, ``block_step``...) took the calls between the kernels' own files:
    the process ran the other library's function (here: abort)."""
    need_compiler()
    from test_native_block import model_of
    monkeypatch.setenv("GPT_HUB_KERNEL", "narrow")  # the native decoder, here and in the child
    monkeypatch.setattr(route_choice, "_chosen", {})
    expected = model_of("gpt2", "float32").generate(torch.tensor([[1, 2, 3]]), max_new_tokens=20)[0].tolist()
    names = ("layer_norm_row", "add_into_row", "block_step", "decoder_step", "argmax_row", "greedy_steps")
    (tmp_path / "other.c").write_text("#include <stdlib.h>\n" + "".join(f"void {n}(void) {{ abort(); }}\n"
                                                                      for n in names))
    subprocess.run(["gcc", "-shared", "-fPIC", str(tmp_path / "other.c"), "-o", str(tmp_path / "other.so")], check=True)
    result = isolated(f"""
        import ctypes
        ctypes.CDLL({str(tmp_path / "other.so")!r}, mode=ctypes.RTLD_GLOBAL)
        from test_native_block import model_of
        decoder = repo_module("models.native.decoder")
        runs, run = [], decoder.NativeGreedy.run  # greedy steps in C: greedy_steps, decoder_step, block_step...
        decoder.NativeGreedy.run = lambda self, *args: runs.append(1) or run(self, *args)
        out = model_of("gpt2", "float32").generate(torch.tensor([[1, 2, 3]]), max_new_tokens=20)
        assert runs, "the native greedy steps were not used"
        print(out[0].tolist())
        """)
    assert_survived(result)
    assert result.stdout.strip() == str(expected)


def test_the_cache_folder_a_file_or_a_path_with_spaces(fresh, monkeypatch, tmp_path, caplog):
    """(Held before too.) A folder that is a file: no build, logged; spaces in the path: fine."""
    need_compiler()
    a_file = tmp_path / "a file"
    a_file.write_text("")
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(a_file))
    with caplog.at_level(logging.INFO):
        assert build.library("narrow") is None
    assert "unavailable" in caplog.text
    monkeypatch.setattr(build, "_loaded", {})
    spaced = tmp_path / "with space" / "native cache"
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(spaced))
    assert build.library("narrow") is not None and len(files_in(spaced)) == 1


def test_the_cache_folder_expands_the_home_folder(monkeypatch, tmp_path):
    """GPT_HUB_NATIVE_DIR="~/x" (quoted in a shell) made a folder named "~" in the working
    directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", "~/native")
    assert build.native_dir() == tmp_path / "native"


# -- the products' operands ----------------------------------------------------------------------

def test_a_row_must_be_as_wide_as_the_product(narrow):
    """A [2, 4] input to an 8-input product has 8 values: it was taken, and half of the [2, 16]
    result was uninitialised memory."""
    product = products.float_product(narrow, torch.randn(16, 8), None, stored_in_out=False)
    for bad in (torch.ones(2, 4), torch.ones(4, 2), torch.tensor(1.0)):
        with pytest.raises(errors.InvalidArgumentError, match="one torch.float32 CPU row of 8"):
            product(bad)
    assert product(torch.ones(1, 1, 8)).shape == (1, 1, 16)


def test_operands_on_another_device_are_refused(narrow):
    """A bias or scales on the meta device (or a GPU) passed every check: their pointer went to
    C, which read NULL as "no bias" (a wrong result) or would have read GPU memory."""
    with pytest.raises(errors.InvalidArgumentError, match="bias"):
        products.float_product(narrow, torch.randn(16, 8), torch.zeros(16, device="meta"), stored_in_out=False)
    with pytest.raises(errors.InvalidArgumentError, match="scales"):
        products.int8_product(narrow, torch.zeros(16, 8, dtype=torch.int8), torch.zeros(16, device="meta"), None,
                              torch.float32)
    with pytest.raises(errors.InvalidArgumentError, match="scales"):
        tiles = torch.zeros(1, 128 * 8, dtype=torch.uint8)
        products.int4_product(narrow, tiles, torch.zeros(16 * 4, dtype=torch.bfloat16, device="meta"), 32, None,
                              torch.float32, 16)


@pytest.mark.parametrize("group", [0, 16, "32", 32.0, 96, 192])
def test_an_int4_group_must_be_a_power_of_two_from_32(narrow, group):
    """0 raised ZeroDivisionError, "32" a TypeError of string formatting; 96 and 192 divide the
    384 inputs but straddled the old kernel's vectors of 128, whose lanes took the wrong scales."""
    tiles = torch.zeros(1, 384 * 8, dtype=torch.uint8)  # one tile of 384 inputs
    with pytest.raises(errors.GPTHubError):
        products.int4_product(narrow, tiles, torch.zeros(16 * 12, dtype=torch.bfloat16), group, None, torch.float32, 16)


@pytest.mark.parametrize("out_features", [0, 17, 32, 5.0])
def test_int4_outputs_must_be_the_tiles_rows(narrow, out_features):
    """The kernel writes the rows of its tiles that are outputs: more than the tiles hold would
    read past them, a whole tile fewer would leave it unread."""
    tiles = torch.zeros(1, 128 * 8, dtype=torch.uint8)  # one tile of 16 rows
    with pytest.raises(errors.GPTHubError):
        products.int4_product(narrow, tiles, torch.zeros(16 * 4, dtype=torch.bfloat16), 32, None, torch.float32,
                              out_features)


def test_memory_gone_from_under_a_product_is_refused_not_read(tmp_path):
    """Each of these segfaulted: a weight's or an input's storage resized to nothing
    (``untyped_storage().resize_(0)``, as FSDP frees parameters) keeps the tensor's shape, so
    every check passed and C read freed memory; an int4 group of -32 passed the checks with
    empty scales and C read before them."""
    need_compiler()
    result = isolated("""\
        def outcome(make_and_call):
            try:
                make_and_call()
                return "read"
            except products.GPTHubError as error:
                return "refused"

        def weight_freed():
            weight = torch.randn(2048, 2048)
            product = products.float_product("narrow", weight, None, False)
            weight.untyped_storage().resize_(0)
            product(torch.ones(2048))

        def input_freed():
            product = products.float_product("narrow", torch.randn(2048, 2048), None, False)
            x = torch.ones(2048)
            x.untyped_storage().resize_(0)
            product(x)

        def scales_freed():
            q = torch.zeros(2048, 2048, dtype=torch.int8)
            scales = torch.ones(2048)
            product = products.int8_product("narrow", q, scales, None, torch.float32)
            scales.untyped_storage().resize_(0)
            product(torch.ones(2048))

        def negative_group():
            tiles = torch.zeros(1, 128 * 8, dtype=torch.uint8)
            products.int4_product("narrow", tiles, torch.empty(0), -32, None, torch.float32, 16)(torch.ones(128))

        for case in (weight_freed, input_freed, scales_freed, negative_group):
            print(case.__name__, outcome(case), flush=True)
        """, GPT_HUB_NATIVE_DIR=str(tmp_path / "native"))
    assert_survived(result)
    assert result.stdout.split() == ["weight_freed", "refused", "input_freed", "refused", "scales_freed", "refused",
                                     "negative_group", "refused"]


def test_a_weight_swapped_by_another_thread_mid_product_stays_alive(tmp_path):
    """ctypes lets other threads run during the call; one doing ``param.data = ...`` freed the
    weight's memory while C was reading it (a segfault within a second or two: a large weight's
    memory goes back to the system when freed)."""
    need_compiler()
    result = isolated("""\
        n = 4096
        weight = torch.nn.Parameter(torch.randn(n, n), requires_grad=False)
        product = products.float_product("narrow", weight, None, False)
        x = torch.randn(n)
        stop = time.monotonic() + 2

        def swap():
            while time.monotonic() < stop:
                weight.data = torch.empty(n, n)

        swapper = threading.Thread(target=swap)
        swapper.start()
        calls = 0
        while time.monotonic() < stop:
            assert product(x).shape == (n,)
            calls += 1
        swapper.join()
        print("calls", calls)
        """, GPT_HUB_NATIVE_DIR=str(tmp_path / "native"))
    assert_survived(result)
    assert result.stdout.startswith("calls")


def test_products_from_threads_and_thread_counts_agree(narrow):
    """(Held before too.) Several Python threads at once, and 1 or 2 torch threads, give the
    float64 result within float32 rounding; a product keeps its weight alive."""
    torch.manual_seed(0)
    weights = [torch.randn(300, 257) for _ in range(4)]
    made = [products.float_product(narrow, w, None, stored_in_out=True) for w in weights]
    x = torch.randn(300)
    wants = [x.double() @ w.double() for w in weights]
    del weights  # the products hold them
    worst = []

    def run(i):
        for _ in range(50):
            worst.append((made[i](x).double() - wants[i]).abs().max().item())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(worst) == 200 and max(worst) < 1e-3
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = made[0](x)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, made[0](x), rtol=1e-5, atol=1e-4)


# -- the choice ----------------------------------------------------------------------------------

@pytest.fixture
def no_choices(monkeypatch, tmp_path):
    """No choice made yet, in memory or on disk (choices are kept beside the builds)."""
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(tmp_path))
    monkeypatch.setattr(route_choice, "_chosen", {})
    monkeypatch.setattr(route_choice, "_warned", set(), raising=False)
    monkeypatch.delenv("GPT_HUB_KERNEL", raising=False)


def test_a_candidate_that_raises_when_measured_is_left_out(no_choices, caplog):
    """One candidate's error (a native kernel out of scratch memory, say) escaped ranking() on
    every call: the model could not run at all, though another kernel could."""
    def broken(x):
        raise products.NativeKernelError("could not allocate")

    with caplog.at_level(logging.WARNING):
        assert route_choice.ranking(("k",), lambda: {"torch": lambda x: x, "wide": broken}, 1 << 30,
                                    torch.ones(4))[0] == "torch"
    assert "wide" in caplog.text and "left out" in caplog.text
    with pytest.raises(products.NativeKernelError):  # nothing runs: the first candidate's error
        route_choice.ranking(("all broken",), lambda: {"a": broken, "b": broken}, 1 << 30, torch.ones(4))[0]
    assert ("all broken",) not in route_choice.chosen()


def test_measuring_takes_fewer_copies_when_memory_runs_short(no_choices):
    """The copies made to spill the cache (up to 1 GB) raised out of ranking() where memory
    was short, though one copy was enough to choose."""
    made = []

    def candidates():
        if made:
            raise MemoryError("no memory for another copy")
        made.append(1)
        return {"a": lambda x: x, "b": lambda x: x + 0}

    assert route_choice.ranking(("k",), candidates, 1, torch.ones(4))[0] in ("a", "b")


def test_an_unknown_forced_kernel_is_logged_once(no_choices, monkeypatch, caplog):
    """GPT_HUB_KERNEL=narow (a typo) was ignored without a word."""
    monkeypatch.setenv("GPT_HUB_KERNEL", "narow")
    with caplog.at_level(logging.WARNING):
        for key in (("k1",), ("k2",)):
            assert route_choice.ranking(key, lambda: {"a": lambda x: x, "b": lambda x: x}, 1 << 30,
                                        torch.ones(4))[0] in ("a", "b")
    assert caplog.text.count("'narow'") == 1
