"""The streaming safetensors writer and the patch spool: exact round trips, what real readers see,
atomicity (nothing left behind on failure), and one module's tensors in memory at a time."""

import gc
import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from loramerge.errors import OutputError
from loramerge.formats.streaming import StreamingSafetensors
from loramerge.formats.writers import OutputItem, tensors_for, write
from loramerge.spool import PatchStore, StoredPatch, materialize, rank_of
from loramerge.patches import Dense, LowRank
from loramerge.architectures.spec import Placement


def _placement(name):
    return Placement(f"diffusion_model.{name}")


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"b.weight": torch.randn(3, 5, generator=g), "a.alpha": torch.tensor(4.0),
            "c.bias": torch.randn(7, generator=g), "empty": torch.empty(0, 3)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_stream_writes_what_safetensors_reads(tmp_path, dtype):
    path = tmp_path / "out.safetensors"
    src = _tensors()
    with StreamingSafetensors(path, dtype) as out:
        for k, v in src.items():
            out.add(k, v)
        out.commit({"z": "1", "a": "two"})
    got = load_file(path)
    assert set(got) == set(src)
    for k, v in src.items():
        assert got[k].dtype == dtype and got[k].shape == v.shape
        assert torch.equal(got[k], v.to(dtype))
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"z": "1", "a": "two"}
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert (8 + n) % 8 == 0  # data 8-byte aligned, as safetensors writes it
    header = json.loads(path.read_bytes()[8:8 + n])
    assert list(header) == sorted(header)  # canonical order: same content, same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]  # no temporary file left


def test_stream_same_content_same_bytes(tmp_path):
    for name in ("1", "2"):
        with StreamingSafetensors(tmp_path / f"{name}.safetensors") as out:
            for k, v in _tensors().items():
                out.add(k, v)
            out.commit({"b": "x", "a": "y"})
    assert (tmp_path / "1.safetensors").read_bytes() == (tmp_path / "2.safetensors").read_bytes()


def test_stream_failure_leaves_nothing(tmp_path):
    path = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeError, match="boom"):
        with StreamingSafetensors(path) as out:
            out.add("a", torch.ones(3))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="two tensors named 'a'"):
        with StreamingSafetensors(path) as out:
            out.add("a", torch.ones(3))
            out.add("a", torch.ones(3))
    assert list(tmp_path.iterdir()) == []


def test_stream_refuses_missing_folder_and_odd_dtypes(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        StreamingSafetensors(tmp_path / "nope" / "x.safetensors")
    with pytest.raises(OutputError, match="float32, float16 or bfloat16"):
        StreamingSafetensors(tmp_path / "x.safetensors", torch.int8)


def test_store_round_trip_is_exact_and_cleans_up(tmp_path):
    g = torch.Generator().manual_seed(3)
    low = LowRank(torch.randn(6, 2, generator=g), torch.randn(2, 4, generator=g), 0.7, (6, 4))
    conv = LowRank(torch.randn(6, 3, generator=g), torch.randn(3, 18, generator=g), 1.0, (6, 2, 3, 3))
    dense = Dense(torch.randn(5, generator=g))
    store = PatchStore(tmp_path)
    handles = [store.put(p) for p in (low, conv, dense)]
    assert [rank_of(h) for h in handles] == [2, 3, None]
    assert store.nbytes == 4 * (12 + 8 + 18 + 54 + 5)
    for p, h in zip((low, conv, dense), handles):
        back = h.load()
        assert type(back) is type(p) and back.shape == p.shape
        assert torch.equal(back.dense(), p.dense())  # float32 bits, not approximately
        assert materialize(h).shape == p.shape and materialize(p) is p
    path = store.path
    assert path.parent == tmp_path and path.exists()
    store.close()
    assert not path.exists()
    with pytest.raises(ValueError, match="closed"):
        handles[0].load()


def test_store_is_removed_when_garbage_collected(tmp_path):
    store = PatchStore(tmp_path)
    store.put(Dense(torch.ones(4)))
    path = store.path
    del store
    gc.collect()
    assert not path.exists()


def test_writer_reads_stored_patches_module_by_module(tmp_path, monkeypatch):
    """Items backed by the spool are written without holding them all: at most one module is loaded
    at a time, and the file equals the one written from the same patches in memory."""
    g = torch.Generator().manual_seed(5)
    patches = {f"m{k}": LowRank(torch.randn(8, 2, generator=g), torch.randn(2, 6, generator=g), 1.0, (8, 6))
               for k in range(5)}
    store = PatchStore(tmp_path)
    live, peak = [0], [0]
    real_load = StoredPatch.load

    def counting_load(self):
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        return real_load(self)

    items_mem = [OutputItem(_placement(k), "weight", p) for k, p in patches.items()]
    items_disk = [OutputItem(_placement(k), "weight", store.put(p)) for k, p in patches.items()]
    write(tmp_path / "mem.safetensors", items_mem, None, "kohya")
    monkeypatch.setattr(StoredPatch, "load", counting_load)
    import loramerge.formats.writers as W

    real_emit_module = W._lora_tensors

    def release(*a, **k):  # a module's tensors are made: its patch may go
        out = real_emit_module(*a, **k)
        live[0] -= 1
        return out

    monkeypatch.setattr(W, "_lora_tensors", release)
    write(tmp_path / "disk.safetensors", items_disk, None, "kohya")
    assert peak[0] == 1
    assert (tmp_path / "mem.safetensors").read_bytes() == (tmp_path / "disk.safetensors").read_bytes()
    assert set(tensors_for(items_disk, None, "kohya")) == set(load_file(tmp_path / "disk.safetensors"))
