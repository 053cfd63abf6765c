"""Issue 14, bad or tricky LoRA files: each defect reproduced byte by byte, and answered with a
specific error naming the file and the key (or a warning in the report), never a traceback; a
failed merge leaves nothing in the output folder."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from loramerge.api import merge
from loramerge.errors import InputFileError, LoraMergeError, OutputError
from loramerge.formats.reader import AdapterFile
from loramerge.inspection import inspect_file

from ._files import ALPHA, DOWN, DROP, UP, lora_tensors, raw_file, tensors_file

F32_NAN = struct.pack("<f", float("nan"))


@pytest.fixture()
def good(tmp_path):
    return tensors_file(tmp_path / "good.safetensors", lora_tensors(seed=1))


@pytest.fixture()
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _merge_fails(bad, good, out, error=InputFileError, **options) -> str:
    """Merge `bad` with `good` into `out`: `error` exactly, naming `bad`; nothing left in `out`."""
    with pytest.raises(LoraMergeError) as info:
        merge([bad, good], output=out / "merged.safetensors", **options)
    assert type(info.value) is error, info.value
    assert list(out.iterdir()) == []
    return str(info.value)


def _names(message: str, path, key: str, *fragments: str) -> None:
    assert message.startswith(f"{path}, key '{key}': "), message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n  -> " in message  # every error says what to do


# -- the header -------------------------------------------------------------------------------------
HEADER_CASES = {
    # name: (overrides of the valid file's header, key named, words of the message)
    "offsets are huge integers": ({DOWN: {"data_offsets": [2**64, 2**64 + 24]}}, DOWN, "past the end of the data"),
    "offset end is a huge integer": ({DOWN: {"data_offsets": [0, 10**300]}}, DOWN, "needs 24 bytes"),
    "entry is a number": ({DOWN: 5}, DOWN, "header entry is a JSON number"),
    "entry is a list": ({DOWN: [1, 2]}, DOWN, "header entry is a JSON array"),
    "no data_offsets": ({DOWN: {"data_offsets": DROP}}, DOWN, "has no data_offsets"),
    "no dtype": ({UP: {"dtype": DROP}}, UP, "has no dtype"),
    "no shape": ({UP: {"shape": DROP}}, UP, "has no shape"),
    "shape of strings": ({DOWN: {"shape": ["2", "3"]}}, DOWN, "is not a list of integers"),
    "shape is a string": ({DOWN: {"shape": "2x3"}}, DOWN, "is not a list of integers"),
    "negative dimension": ({DOWN: {"shape": [-2, -3]}}, DOWN, "negative dimension"),
    "shape claims more than the bytes": ({DOWN: {"shape": [100000, 100000]}}, DOWN, "needs more than 24 bytes"),
    "unknown dtype": ({DOWN: {"dtype": "F33"}}, DOWN, "unknown dtype 'F33'"),
    "fractional offsets": ({DOWN: {"data_offsets": [0.5, 24.5]}}, DOWN, "not a pair of integers"),
    "negative offset": ({DOWN: {"data_offsets": [-8, 16]}}, DOWN, "0 <= begin <= end"),
    "reversed offsets": ({DOWN: {"data_offsets": [24, 0]}}, DOWN, "0 <= begin <= end"),
    "non-string metadata value": (
        {"__metadata__": {"ss_network_dim": 16}},
        "__metadata__.ss_network_dim",
        "metadata value is a JSON number",
    ),
}


@pytest.mark.parametrize("case", HEADER_CASES, ids=list(HEADER_CASES))
def test_bad_header_is_refused_before_any_work(case, tmp_path, good, out):
    overrides, key, fragment = HEADER_CASES[case]
    bad = tensors_file(tmp_path / "bad.safetensors", lora_tensors(), overrides=overrides)
    _names(_merge_fails(bad, good, out), bad, key, fragment)
    with pytest.raises(InputFileError):
        inspect_file(bad)


def test_aliased_offsets_are_refused(tmp_path, good, out):
    """down [2, 4] and up [4, 2] both read from bytes 0..32: one tensor's data read as two."""
    header = {
        DOWN: {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]},
        UP: {"dtype": "F32", "shape": [4, 2], "data_offsets": [0, 32]},
        ALPHA: {"dtype": "F32", "shape": [], "data_offsets": [32, 36]},
    }
    bad = raw_file(tmp_path / "bad.safetensors", header, struct.pack("<9f", *range(9)))
    _names(_merge_fails(bad, good, out), bad, UP, "overlaps that of 'lora_unet_a.lora_down.weight'")


def _valid_header_and_data(tmp_path, metadata=None):
    raw = tensors_file(tmp_path / "v.safetensors", lora_tensors(), metadata=metadata).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return raw[8 : 8 + n].decode(), raw[8 + n :]


def test_duplicate_tensor_key_is_refused_not_last_wins(tmp_path, good, out):
    text, data = _valid_header_and_data(tmp_path)
    # the key UP written a second time, pointing at the down factor's bytes
    dup = text[:-1] + f', "{UP}": {{"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 24]}}}}'
    bad = raw_file(tmp_path / "bad.safetensors", dup, data)
    _names(_merge_fails(bad, good, out), bad, UP, "appears twice")


def test_duplicate_field_in_an_entry_is_refused(tmp_path, good, out):
    text, data = _valid_header_and_data(tmp_path)
    dup = text.replace('"dtype": "F32"', '"dtype": "F32", "dtype": "F16"', 1)
    bad = raw_file(tmp_path / "bad.safetensors", dup, data)
    _names(_merge_fails(bad, good, out), bad, DOWN, "'dtype' appears twice")


def test_duplicate_metadata_key_is_refused(tmp_path, good, out):
    text, data = _valid_header_and_data(tmp_path, metadata={"ss_network_dim": "4"})
    bad = raw_file(
        tmp_path / "bad.safetensors",
        text.replace('"ss_network_dim": "4"', '"ss_network_dim": "4", "ss_network_dim": "8"'),
        data,
    )
    _names(_merge_fails(bad, good, out), bad, "__metadata__.ss_network_dim", "appears twice")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_literal_in_the_header_is_refused_naming_its_key(literal, tmp_path, good, out):
    text, data = _valid_header_and_data(tmp_path)
    bad = raw_file(tmp_path / "bad.safetensors", text.replace('"shape": [2, 3]', f'"shape": [2, {literal}]', 1), data)
    _names(_merge_fails(bad, good, out), bad, DOWN, f"shape [2, {literal}] is not a list of integers")
    meta = raw_file(tmp_path / "meta.safetensors", text[:-1] + f', "__metadata__": {{"x": {literal}}}}}', data)
    _names(_merge_fails(meta, good, out), meta, "__metadata__.x", f"{literal} literal (not JSON)")


@pytest.mark.parametrize(
    "problem, change, fragment",
    [
        (
            "gap",
            lambda t, d: (
                t.replace("[24, 56]", "[28, 60]").replace("[56, 60]", "[60, 64]"),
                d[:24] + b"\0" * 4 + d[24:],
            ),
            "a gap of 4 byte(s)",
        ),
        (
            "overlap",
            lambda t, d: (t.replace("[24, 56]", "[16, 48]").replace("[56, 60]", "[48, 52]"), d[:52]),
            "overlaps that of 'lora_unet_a.lora_down.weight'",
        ),
    ],
)
def test_gapped_or_overlapping_offsets_are_refused(problem, change, fragment, tmp_path, good, out):
    text, data = _valid_header_and_data(tmp_path)
    assert '"data_offsets": [24, 56]' in text and len(data) == 60  # down [0, 24], up [24, 56], alpha [56, 60]
    bad = raw_file(tmp_path / "bad.safetensors", *change(text, data))
    _names(_merge_fails(bad, good, out), bad, UP, fragment)


def test_bytes_after_the_last_tensor_are_refused(tmp_path, good, out):
    text, data = _valid_header_and_data(tmp_path)
    bad = raw_file(tmp_path / "bad.safetensors", text, data + b"\x7f" * 8)
    _names(_merge_fails(bad, good, out), bad, ALPHA, "8 byte(s) after the last tensor")


def test_short_read_after_the_file_changed(tmp_path):
    """The header was read, then the file lost its tail (ValueError: read length, before)."""
    path = tensors_file(tmp_path / "x.safetensors", lora_tensors())
    f = AdapterFile(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputFileError) as info:
        f.patches(f.entries["lora_unet_a"])
    _names(str(info.value), path, DOWN, "cut short")


# -- the tensors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
def test_integer_and_bool_factors_are_refused(dtype, tmp_path, good, out):
    t = lora_tensors()
    t[UP] = t[UP].to(dtype)
    bad = tensors_file(tmp_path / "bad.safetensors", t)
    _names(
        _merge_fails(bad, good, out),
        bad,
        UP,
        "LoRA factors are floating point",
        "I32" if dtype is torch.int32 else "BOOL",
    )


def test_five_dimensional_factor_is_refused(tmp_path, good, out):
    t = lora_tensors()
    t[DOWN] = t[DOWN].reshape(2, 3, 1, 1, 1)
    bad = tensors_file(tmp_path / "bad.safetensors", t)
    _names(_merge_fails(bad, good, out), bad, DOWN, "has 5 dimensions")


def test_rank_zero_factors_are_refused(tmp_path, good, out):
    """ZeroDivisionError (alpha / rank) before."""
    bad = tensors_file(
        tmp_path / "bad.safetensors", {DOWN: torch.ones(0, 3), UP: torch.ones(4, 0), ALPHA: torch.tensor(1.0)}
    )
    _names(_merge_fails(bad, good, out), bad, DOWN, "zero-size dimension [0, 3]", "rank 0")


def test_scalar_loha_factor_is_refused(tmp_path, good, out):
    """IndexError (rank of a 0-D tensor) before."""
    t = {
        f"lora_unet_a.hada_{w}": torch.ones(4, 2) if w.endswith("_a") else torch.ones(2, 3)
        for w in ("w1_a", "w1_b", "w2_a", "w2_b")
    }
    t["lora_unet_a.hada_w1_b"] = torch.tensor(1.0)
    bad = tensors_file(tmp_path / "bad.safetensors", t)
    _names(_merge_fails(bad, good, out), bad, "lora_unet_a.hada_w1_b", "has 0 dimensions")


def test_factors_that_do_not_combine_are_refused_at_open(tmp_path, good, out):
    """A LoHa whose halves differ: found from the header (meta tensors), before any data is read."""
    t = {
        "lora_unet_a.hada_w1_a": torch.ones(4, 2),
        "lora_unet_a.hada_w1_b": torch.ones(2, 3),
        "lora_unet_a.hada_w2_a": torch.ones(4, 2),
        "lora_unet_a.hada_w2_b": torch.ones(2, 5),
    }
    bad = tensors_file(tmp_path / "bad.safetensors", t)
    _names(_merge_fails(bad, good, out), bad, "lora_unet_a", "cannot compute ΔW", "LoHa halves differ")


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_alpha_is_refused(alpha, tmp_path, good, out):
    """linalg.eigh failed on the NaN ΔW before."""
    bad = tensors_file(tmp_path / "bad.safetensors", lora_tensors(alpha=alpha))
    _names(_merge_fails(bad, good, out), bad, ALPHA, f"alpha is {alpha}")
    with pytest.raises(InputFileError, match="must be a finite number"):
        inspect_file(bad)


def test_factors_whose_product_overflows_float32_are_refused(tmp_path, good, out):
    t = lora_tensors()
    t[UP], t[DOWN] = t[UP] * 1e20, t[DOWN] * 1e20
    bad = tensors_file(tmp_path / "bad.safetensors", t)
    _names(_merge_fails(bad, good, out, mode="ties"), bad, "lora_unet_a", "beyond 1e+12")


def test_fp8_factors_merge_like_their_float32_values(tmp_path, good):
    """isfinite has no Float8_e4m3fn kernel: the checks upcast; the merge is that of the upcast values."""
    t = lora_tensors(seed=3)
    t8 = {k: v.to(torch.float8_e4m3fn) if k != ALPHA else v for k, v in t.items()}
    f8 = tensors_file(tmp_path / "f8.safetensors", t8)
    f32 = tensors_file(tmp_path / "f32.safetensors", {k: v.float() for k, v in t8.items()})
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    merge([f8, good], output=a, mode="weighted_sum", dtype="float32").close()
    merge([f32, good], output=b, mode="weighted_sum", dtype="float32").close()
    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


# -- legal but suspicious: warnings in the report, exit 0 ------------------------------------------
def _warnings_of(bad, good, tmp_path) -> list[str]:
    with merge([bad, good], output=tmp_path / "merged.safetensors") as result:
        assert (tmp_path / "merged.safetensors").exists()
        return result.report.warnings


@pytest.mark.parametrize("alpha, word", [(0.0, "= 0"), (-2.0, "= -2")])
def test_zero_or_negative_alpha_is_a_warning(alpha, word, tmp_path, good):
    bad = tensors_file(tmp_path / "bad.safetensors", lora_tensors(alpha=alpha))
    (w,) = [w for w in _warnings_of(bad, good, tmp_path) if "alpha" in w]
    assert w.startswith("bad: alpha <= 0 in 1 module(s), e.g. 'lora_unet_a.alpha'") and word in w


def test_all_zero_lora_is_a_warning(tmp_path, good):
    t = lora_tensors()
    t[UP] = torch.zeros_like(t[UP])
    bad = tensors_file(tmp_path / "bad.safetensors", t)
    assert "bad: every module read (1) is exactly zero: this LoRA changes nothing" in " ".join(
        _warnings_of(bad, good, tmp_path)
    )


def test_fp16_overflow_level_values_are_a_warning(tmp_path, good):
    t = {k: v.half() for k, v in lora_tensors().items()}
    t[UP][0, 0] = 65504.0  # float16's largest value: what an overflowed training run leaves
    bad = tensors_file(tmp_path / "bad.safetensors", t)
    (w,) = [w for w in _warnings_of(bad, good, tmp_path) if "float16 limit" in w]
    assert w.startswith("bad: 1 tensor(s) hold values at the float16 limit") and UP in w


def test_a_clean_merge_has_none_of_these_warnings(tmp_path, good):
    other = tensors_file(tmp_path / "other.safetensors", lora_tensors(seed=5))
    assert not any(w.startswith(("good:", "other:")) for w in _warnings_of(other, good, tmp_path))


# -- shapes that differ between LoRAs ---------------------------------------------------------------
def test_lenient_leaves_out_a_group_whose_shape_differs_and_lists_it(tmp_path, good, out):
    """RuntimeError: sizes must match (strict and lenient) before."""
    other = tensors_file(tmp_path / "other.safetensors", lora_tensors(seed=2, cols=5))
    third = tensors_file(tmp_path / "third.safetensors", lora_tensors(seed=4))
    message = _merge_fails(good, other, out)  # a tie: the first input's shape is the reference
    assert message.startswith(f"{other}, key 'diffusion_model.a': ΔW is [4, 5] here but [4, 3] in {good}")
    assert "--lenient" in message
    with merge([other, good, third], strict=False) as result:
        (w,) = [w for w in result.report.warnings if w.startswith("other:")]
        assert "left out: diffusion_model.a (ΔW [4, 5], the others' [4, 3])" in w
        assert result.groups[0].retention.keys() == {1, 2}  # good and third merged, other left out


# -- the output ---------------------------------------------------------------------------------------
def test_output_with_non_finite_values_is_not_written(tmp_path, good, out):
    """A strength that overflows float32 in the written factors (3e38 · alpha/rank 2 · |up| up to 2):
    refused before the rename."""
    strong = tensors_file(tmp_path / "strong.safetensors", lora_tensors(seed=7, alpha=4.0))
    assert float(lora_tensors(seed=7)[UP].abs().max()) * 3e38 * 2 > torch.finfo(torch.float32).max
    message = _merge_fails((strong, 3e38), good, out, error=OutputError, mode="weighted_sum")
    assert message.startswith(f"{out / 'merged.safetensors'}: merged tensor '{UP}' has ") and "NaN/Inf" in message


def test_merge_maths_overflow_names_the_group(tmp_path, good, out):
    """TIES on dense deltas scaled by 3e38: the factorisation of a non-finite matrix failed with a traceback."""
    strong = tensors_file(tmp_path / "strong.safetensors", lora_tensors(seed=7, alpha=4.0))
    message = _merge_fails((strong, 3e38), good, out, error=LoraMergeError, mode="ties")
    assert message.startswith("group 'diffusion_model.a': the merge overflowed float32")


# -- memory -------------------------------------------------------------------------------------------
def test_header_claiming_huge_shapes_fails_without_allocating(tmp_path):
    """The 4.6 KB file that drove RSS past 10 GiB: shapes of 10^12 values over a few bytes of data."""
    t = lora_tensors()
    overrides = {
        DOWN: {"shape": [1, 10**6, 10**6], "data_offsets": [0, 0]},
        UP: {"shape": [10**6, 10**6, 0], "data_offsets": [0, 0]},
    }
    bad = tensors_file(tmp_path / "bad.safetensors", t, overrides=overrides)
    code = (
        "import resource, sys\n"
        "from loramerge.api import merge\n"
        "from loramerge.errors import InputFileError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    merge([{str(bad)!r}, {str(bad)!r}])\n"
        "except InputFileError as exc:\n"
        "    print(exc)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    *message, grown_kib = proc.stdout.strip().splitlines()
    assert f"key '{DOWN}': shape [1, 1000000, 1000000] of F32 needs more than 0 bytes" in message[0]
    assert int(grown_kib) < 64 * 1024  # KiB: nothing sized by the claimed shapes


# -- the command line ---------------------------------------------------------------------------------
def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loramerge.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_answers_a_bad_header_with_one_error_line(tmp_path, good, out):
    bad = tensors_file(tmp_path / "bad.safetensors", lora_tensors(), overrides={DOWN: {"shape": [-2, -3]}})
    proc = _cli("merge", bad, good, "-o", out / "m.safetensors", "-q")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {bad}, key '{DOWN}': shape [-2, -3] has a negative dimension")
    assert list(out.iterdir()) == []
    proc = _cli("inspect", bad)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_cli_warns_and_exits_0_for_a_negative_alpha(tmp_path, good, out):
    bad = tensors_file(tmp_path / "bad.safetensors", lora_tensors(alpha=-1.0))
    proc = _cli("merge", bad, good, "-o", out / "m.safetensors")
    assert proc.returncode == 0, proc.stderr
    assert "alpha <= 0 in 1 module(s)" in proc.stdout + proc.stderr
    assert (out / "m.safetensors").exists()


# -- PEFT metadata: it decides every module's alpha -------------------------------------------------------
def _peft(tmp_path, adapter_metadata: str):
    g = torch.Generator().manual_seed(0)
    t = {"unet.a.lora_A.weight": torch.randn(2, 3, generator=g), "unet.a.lora_B.weight": torch.randn(4, 2, generator=g)}
    return tensors_file(tmp_path / "peft.safetensors", t, metadata={"lora_adapter_metadata": adapter_metadata})


@pytest.mark.parametrize(
    "adapter_metadata, fragment",
    [
        ("{", "PEFT metadata is not valid JSON"),
        ("[2]", "PEFT metadata is a JSON list"),
        ('{"unet.r": 2, "unet.lora_alpha": "x"}', "'unet.lora_alpha' is \"x\", not a number"),
        ('{"unet.r": 2, "unet.alpha_pattern": {"a(": 1}}', "'unet.alpha_pattern' holds 'a(', not a regular expression"),
        ('{"unet.r": 2, "unet.alpha_pattern": [1]}', "'unet.alpha_pattern' is a JSON list"),
    ],
)
def test_unreadable_peft_metadata_is_refused_not_ignored(adapter_metadata, fragment, tmp_path, good, out):
    """Ignored before (alpha silently became the rank), or a TypeError/re.error traceback."""
    bad = _peft(tmp_path, adapter_metadata)
    _names(_merge_fails(bad, good, out), bad, "__metadata__.lora_adapter_metadata", fragment)


def test_nan_peft_alpha_is_refused(tmp_path, good, out):
    bad = _peft(tmp_path, '{"unet.r": 2, "unet.lora_alpha": NaN}')
    _names(_merge_fails(bad, good, out), bad, "unet.a (lora_adapter_metadata lora_alpha)", "alpha is nan")


def test_a_path_the_system_refuses_is_an_error(tmp_path):
    """OSError from stat (here ENAMETOOLONG; EINVAL came from seeking to a huge offset, refused above)."""
    long = tmp_path / ("x" * 5000 + ".safetensors")
    with pytest.raises(InputFileError, match="cannot open: File name too long"):
        inspect_file(long)
