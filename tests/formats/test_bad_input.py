"""Bad input gets a specific error naming the file (and key), never a deep traceback."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from loramerge.errors import InputFileError, PickleRefusedError
from loramerge.formats.reader import AdapterFile


def _lora(tmp_path, name="x.safetensors", **overrides):
    t = {"lora_unet_a.lora_down.weight": torch.ones(2, 3), "lora_unet_a.lora_up.weight": torch.ones(4, 2),
         "lora_unet_a.alpha": torch.tensor(1.0)}
    t.update(overrides)
    path = tmp_path / name
    save_file(t, path)
    return path


def test_empty_file(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    with pytest.raises(InputFileError, match=r"empty\.safetensors: file is empty"):
        AdapterFile(p)


def test_truncated_header(tmp_path):
    p = _lora(tmp_path)
    data = p.read_bytes()
    (p.parent / "t.safetensors").write_bytes(data[:20])
    with pytest.raises(InputFileError, match=r"t\.safetensors: truncated"):
        AdapterFile(p.parent / "t.safetensors")


def test_truncated_data(tmp_path):
    p = _lora(tmp_path)
    data = p.read_bytes()
    (p.parent / "t.safetensors").write_bytes(data[:-8])
    with pytest.raises(InputFileError, match="truncated: tensor data ends"):
        AdapterFile(p.parent / "t.safetensors")


def test_garbage_header(tmp_path):
    p = tmp_path / "g.safetensors"
    p.write_bytes(struct.pack("<Q", 4) + b"{{{{" + b"\0" * 8)
    with pytest.raises(InputFileError, match="not valid JSON"):
        AdapterFile(p)


def test_full_checkpoint_instead_of_lora(tmp_path):
    p = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.ones(2, 2),
               "model.diffusion_model.input_blocks.0.0.bias": torch.ones(2)}, p)
    with pytest.raises(InputFileError, match="full model checkpoint"):
        AdapterFile(p)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_refused_by_default_and_loaded_weights_only_when_allowed(tmp_path, suffix):
    p = tmp_path / f"x{suffix}"
    torch.save({"lora_unet_a.lora_down.weight": torch.ones(2, 3), "lora_unet_a.lora_up.weight": torch.ones(4, 2)}, p)
    with pytest.raises(PickleRefusedError, match="never unpickles") as info:
        AdapterFile(p)
    assert "--allow-pickle" in str(info.value) and str(p) in str(info.value)
    f = AdapterFile(p, allow_pickle=True)
    assert set(f.entries) == {"lora_unet_a"}


def test_pickle_with_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(InputFileError):
        AdapterFile(p, allow_pickle=True)
    assert not (tmp_path / "pwned").exists()


def test_pickle_disguised_as_safetensors(tmp_path):
    p = tmp_path / "x.safetensors"
    torch.save({"a": torch.ones(1)}, p)
    with pytest.raises(PickleRefusedError):
        AdapterFile(p)


def test_nan_values_name_the_key(tmp_path):
    p = _lora(tmp_path, **{"lora_unet_a.lora_up.weight": torch.tensor([[float("nan"), 1.0]] * 4)})
    f = AdapterFile(p)
    with pytest.raises(InputFileError, match=r"lora_unet_a\.lora_up\.weight.*NaN/Inf"):
        f.patches(f.entries["lora_unet_a"])


def test_up_down_that_do_not_fit(tmp_path):
    p = _lora(tmp_path, **{"lora_unet_a.lora_up.weight": torch.ones(4, 5)})
    with pytest.raises(InputFileError, match=r"key 'lora_unet_a\.lora_up\.weight'.*do not fit"):
        AdapterFile(p)


def test_incomplete_module(tmp_path):
    p = tmp_path / "x.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.ones(2, 3)}, p)
    with pytest.raises(InputFileError, match="missing"):
        AdapterFile(p)


def test_peft_metadata_alpha_and_patterns(tmp_path):
    p = tmp_path / "peft.safetensors"
    meta = {"lora_adapter_metadata": json.dumps({"unet.r": 2, "unet.lora_alpha": 6, "unet.alpha_pattern": {"b": 1},
                                                 "unet.rank_pattern": {}})}
    t = {f"unet.{m}.lora_A.weight": torch.ones(2, 3) for m in ("a", "x.b")}
    t.update({f"unet.{m}.lora_B.weight": torch.ones(4, 2) for m in ("a", "x.b")})
    save_file(t, p, metadata=meta)
    f = AdapterFile(p)
    assert f.alpha(f.entries["unet.a"]) == pytest.approx(6.0)
    assert f.alpha(f.entries["unet.x.b"]) == pytest.approx(1.0)
    assert f.patches(f.entries["unet.a"])["weight"].dense()[0, 0] == pytest.approx(3 * 2)


def test_alpha_tensor_wins_over_metadata(tmp_path):
    p = tmp_path / "k.safetensors"
    save_file({"unet.a.lora_A.weight": torch.ones(2, 3), "unet.a.lora_B.weight": torch.ones(4, 2),
               "unet.a.alpha": torch.tensor(1.0)}, p,
              metadata={"lora_adapter_metadata": json.dumps({"unet.r": 2, "unet.lora_alpha": 8})})
    f = AdapterFile(p)
    assert f.alpha(f.entries["unet.a"]) == 1.0


def test_safetensors_whose_header_length_starts_with_0x80_is_not_a_pickle(tmp_path):
    # pad the metadata so that the header length's first byte is 0x80
    for pad in range(0, 400):
        p = tmp_path / "h.safetensors"
        save_file({"lora_unet_a.lora_down.weight": torch.ones(2, 3), "lora_unet_a.lora_up.weight": torch.ones(4, 2)},
                  p, metadata={"x": "y" * pad})
        if p.read_bytes()[0] == 0x80:
            break
    assert p.read_bytes()[0] == 0x80
    assert set(AdapterFile(p).entries) == {"lora_unet_a"}


def test_a_dtype_this_torch_lacks_is_refused_by_name_with_the_fix(tmp_path, monkeypatch):
    """torch 2.2 (pyproject's floor) has no uint16/32/64: such tensors are refused naming the dtype,
    the key and the torch to install, not an AttributeError at import."""
    from loramerge.formats import files

    monkeypatch.delitem(files.SAFETENSORS_DTYPES, "U16")
    path = tmp_path / "u16.safetensors"
    with pytest.raises(InputFileError) as err:
        files._tensor(bytearray(12), "U16", (2, 3), path, "lora_unet_x.lora_down.weight")
    text = str(err.value)
    assert "unsupported tensor dtype U16" in text and "lora_unet_x.lora_down.weight" in text
    assert f"torch {torch.__version__} has no torch.uint16; upgrade torch (>= 2.3)" in text
    assert files.unsupported_dtype_hint("F4") is None  # not a safetensors dtype: no torch to suggest
