"""Native names and fused layouts against diffusers' own LoRA converters.

diffusers ships converters from the native trainers' files (kohya FLUX, HunyuanVideo, Wan,
Z-Image) to its module names. Feed each one a LoRA built from a table's native names, with an up
matrix whose rows are numbered, and check that every key it writes lands, through the table's
diffusers aliases, on the module it came from, and on the right rows of a fused weight.
"""

from __future__ import annotations

import pytest
import torch

lcu = pytest.importorskip("diffusers.loaders.lora_conversion_utils")

from loramerge.architectures import Branch, Stem, get_table, placer  # noqa: E402

FLUX_HIDDEN = 3072  # the converters hard-code FLUX.1's/HunyuanVideo's size to split single-block linear1
_SWAPPED = {"norm_out.linear": "final_layer.adaLN_modulation.1"}  # shift/scale halves swapped


def _rows(fused) -> int:
    if fused is None:
        return 2
    return FLUX_HIDDEN * 7 if fused.names == ("q", "k", "v", "mlp") else 3 * len(fused.names)


def _up(rows: int, rank: int = 2) -> torch.Tensor:
    return torch.arange(rows * rank, dtype=torch.float32).reshape(rows, rank)


def _native_linears(table_name: str, skip: tuple[str, ...], rank: int = 2) -> dict[str, torch.Tensor]:
    """canonical module -> numbered up matrix, for the table's non-norm denoiser modules."""
    table = get_table(table_name)
    out = {}
    for module, fused in table.modules.items():
        native = module.split(".", 1)[1]
        if not module.startswith("diffusion_model.") or "norm" in native.split(".")[-1] or native.startswith(skip):
            continue
        out[module] = _up(_rows(fused), rank)
    return out


def _check(table_name: str, converted: dict[str, torch.Tensor], sources: dict[str, torch.Tensor],
           not_aliased: dict[str, str] | None = None) -> None:
    """`not_aliased`: diffusers path -> native module it comes from, where no rename expresses it."""
    not_aliased = not_aliased or {}
    table, key_placer = get_table(table_name), placer(table_name)
    reached, unplaced = set(), set()
    for key, value in converted.items():
        if not key.endswith("lora_B.weight"):
            continue
        path = key.removeprefix("transformer.").removesuffix(".lora_B.weight")
        placement = key_placer.place(Stem(Branch.DENOISER, path, dotted=True))
        if placement is None:
            unplaced.add(path)
            continue
        up = sources[placement.module]
        if placement.component is not None:
            up = up[table.modules[placement.module].slices(up.shape[0])[placement.component]]
        assert torch.equal(value, up), path
        reached.add(placement.module)
    assert unplaced == set(not_aliased)
    assert reached == set(sources) - {f"diffusion_model.{n}" for n in not_aliased.values()}


def test_flux_kohya_names_and_fused_rows():
    sources = _native_linears("flux", skip=())
    sd = {}
    for module, up in sources.items():
        stem = "lora_unet_" + module.split(".", 1)[1].replace(".", "_")
        sd[f"{stem}.lora_down.weight"] = torch.ones(2, 4)
        sd[f"{stem}.lora_up.weight"] = up
    converted = lcu._convert_kohya_flux_lora_to_diffusers(sd)
    _check("flux", converted, sources, _SWAPPED)


def test_hunyuan_video_native_names_and_fused_rows():
    # Rank 6: the converter also cuts lora_A of the refiner's self_attn_qkv in three and of
    # final_layer.adaLN_modulation.1 in two (only lora_B is compared).
    sources = _native_linears("hunyuan_video", skip=(), rank=6)
    sd = {}
    for module, up in sources.items():
        sd[f"diffusion_model.{module.split('.', 1)[1]}.lora_A.weight"] = torch.ones(6, 4)
        sd[f"diffusion_model.{module.split('.', 1)[1]}.lora_B.weight"] = up
    converted = lcu._convert_hunyuan_video_lora_to_diffusers(sd)
    _check("hunyuan_video", converted, sources, _SWAPPED)


def test_wan_native_names():
    # The converter handles the modules LoRA trainers adapt, not the patch embedding or the
    # image embedder's norms.
    sources = _native_linears("wan", skip=("patch_embedding", "img_emb.proj.0", "img_emb.proj.4"))
    sd = {}
    for module, up in sources.items():
        sd[f"{module}.lora_A.weight"] = torch.ones(2, 4)
        sd[f"{module}.lora_B.weight"] = up
    converted = lcu._convert_non_diffusers_wan_lora_to_diffusers(sd)
    _check("wan", converted, sources)


def test_zimage_native_names_and_fused_rows():
    # Only the transformer blocks: the converter renames nothing at the top level.
    sources = _native_linears("zimage", skip=("x_embedder", "final_layer", "cap_embedder", "t_embedder"))
    sd = {}
    for module, up in sources.items():
        sd[f"{module}.lora.down.weight"] = torch.ones(2, 4)
        sd[f"{module}.lora.up.weight"] = up
    converted = lcu._convert_non_diffusers_z_image_lora_to_diffusers(sd)
    _check("zimage", converted, sources)


SINGLE_FILE = {  # table -> diffusers' converter for the original (single-file) checkpoint
    "wan": "convert_wan_transformer_to_diffusers",
    "zimage": "convert_z_image_transformer_checkpoint_to_diffusers",
    "ltx": "convert_ltx_transformer_checkpoint_to_diffusers",
    "hunyuan_video": "convert_hunyuan_video_transformer_to_diffusers",
}


@pytest.mark.parametrize("name", list(SINGLE_FILE))
def test_native_names_against_single_file_checkpoint_converter(name):
    """Every native module, norms and embedders included, as a checkpoint weight: diffusers renames
    each to the table's diffusers spelling (and splits fused ones on the table's rows)."""
    sfu = pytest.importorskip("diffusers.loaders.single_file_utils")
    table = get_table(name)
    sources = {m: _up(_rows(f), 1)
               for m, f in table.modules.items() if m.startswith("diffusion_model.")}
    checkpoint = {f"{m.split('.', 1)[1]}.weight": up for m, up in sources.items()}
    converted = getattr(sfu, SINGLE_FILE[name])(checkpoint)
    converted = {k.removesuffix(".weight") + ".lora_B.weight": v for k, v in converted.items()}
    _check(name, converted, sources, _SWAPPED if name == "hunyuan_video" else None)
