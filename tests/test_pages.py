"""Weights in memory of 2 MB pages (models/pages.py): each large one in a map of its own, advised
into transparent huge pages, whichever way it was made (loaded, converted, quantized, packed)."""

import gc

import pytest
import torch
from conftest import models, repo_module

pages = repo_module("models.pages")
kernels = repo_module("models.kernels")
HUGE = pages.HUGE_PAGE

needs_huge_pages = pytest.mark.skipif(not pages.HUGE_PAGES, reason="this system gives no transparent huge pages "
                                      "(not Linux, none built in, or turned off)")

# Weights of at least 2 MB in float32 and bfloat16 alike, in a model of two blocks.
CONFIG = dict(vocab_size=1400, n_positions=32, n_embd=768, n_layer=2, n_head=12)


def advised(address: int) -> bool:
    """Whether this process's mapping holding ``address`` is advised into huge pages (its VmFlags
    in /proc/self/smaps say ``hg``)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:  # a mapping's first line: its address range
                low, high = (int(part, 16) for part in head[0].split("-"))
                inside = low <= address < high
            elif inside and head[0] == "VmFlags:":
                return "hg" in head[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def large(tensors) -> list[torch.Tensor]:
    found = [t for t in tensors if t.numel() * t.element_size() >= HUGE]
    assert found, "no tensor of 2 MB or more to look at"
    return found


@needs_huge_pages
def test_a_large_weight_starts_a_map_of_its_own_whose_whole_2mb_pages_are_advised():
    weight = pages.empty_in_huge_pages((1280, 1024), torch.float32)  # 5 MB: two whole 2 MB pages and a tail
    start = weight.data_ptr()
    assert start % HUGE == 0 and weight.is_contiguous() and weight.shape == (1280, 1024)
    assert weight.untyped_storage().nbytes() == 1280 * 1024 * 4  # its storage is its bytes, nothing more
    assert advised(start) and advised(start + 2 * HUGE - 1)
    assert not advised(start + 2 * HUGE)  # the tail: advising it would round it up to a whole 2 MB page


def test_a_small_weight_is_plain_memory():
    small = pages.empty_in_huge_pages((100, 100), torch.float32)
    assert small.untyped_storage().resizable()  # torch.empty's own


@needs_huge_pages
def test_a_copy_holds_the_values_and_its_map_lives_as_long_as_any_view():
    source = torch.randn(3, 1024, 768)
    copy = pages.copy_in_huge_pages(source.transpose(1, 2), torch.bfloat16)
    assert copy.is_contiguous() and torch.equal(copy, source.transpose(1, 2).to(torch.bfloat16))
    view = copy[2, 5]
    expected = view.clone()
    del copy
    gc.collect()
    pages.empty_in_huge_pages((1024, 1024), torch.float32).fill_(7)  # memory that could reuse a freed map
    assert torch.equal(view, expected)


@needs_huge_pages
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("saved_as", ["safetensors", "pytorch"])
def test_loaded_weights_are_in_huge_pages(tmp_path, dtype, saved_as):
    model = models.GPT2LMHeadModel.from_config(models.GPT2Config(**CONFIG))
    if saved_as == "safetensors":
        model.save_pretrained(tmp_path)
    else:
        model.config.save_pretrained(tmp_path)
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = models.GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype=dtype)
    for name, p in loaded.named_parameters():
        if p.numel() * p.element_size() >= HUGE:
            assert p.dtype == dtype and advised(p.data_ptr()), name
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a.to(dtype), b), name


@needs_huge_pages
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_values_the_kernels_read_are_in_huge_pages(scheme, narrow):
    layer = repo_module("models.quantize").QuantizedLinear.of(torch.randn(3072, 1536), None, scheme, 32)
    values = [layer.native[0]] + ([layer.qweight] if scheme == "int8" else [])  # int4: 2.4 MB of tiles
    for value in large(values):
        assert advised(value.data_ptr())


@needs_huge_pages
def test_the_transposed_copy_for_the_rows_kernel_is_in_huge_pages(narrow):
    weight = torch.randn(768, 3072).to(torch.bfloat16)  # [in, out], as Conv1D stores it
    product = kernels._candidate(f"{narrow}-rows", weight, None, True)
    copy = repo_module("models.packed_weights").derived(weight, "out_in", lambda: pytest.fail("no copy was kept"))
    assert product is not None and copy.shape == (3072, 768) and advised(copy.data_ptr())
    x = torch.randn(1, 768).to(torch.bfloat16)
    torch.testing.assert_close(product(x).float(), (x.float() @ weight.float()), rtol=2e-2, atol=2e-2)


def test_a_copy_of_a_tensor_elsewhere_stays_on_its_device():
    """Loading a state dict on another device converted it onto the CPU: a model split across two."""
    copy = pages.copy_in_huge_pages(torch.empty(1024, 1024, device="meta"), torch.bfloat16)
    assert copy.device.type == "meta" and copy.dtype == torch.bfloat16


def test_without_huge_pages_weights_that_need_no_conversion_stay_mapped(tmp_path, monkeypatch):
    """Copying them would gain nothing there, cost the copy, and lose the page cache's sharing."""
    monkeypatch.setattr(pages, "HUGE_PAGES", False)
    models.GPT2LMHeadModel.from_config(models.GPT2Config(**CONFIG)).save_pretrained(tmp_path)
    mapped = models.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert all(not p.untyped_storage().resizable() for p in mapped.parameters())  # the file's map
    converted = models.GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert all(p.untyped_storage().resizable() for p in converted.parameters())  # torch.empty's
