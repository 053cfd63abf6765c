"""The nodes (ComfyUI's classic interface: INPUT_TYPES / RETURN_TYPES / FUNCTION), thin over loramerge.

LoRA Stack → LoRA Optimizer (MODEL, CLIP, report, merge data) → Save Merged LoRA; Optimizer
Settings feeds every option of ``loramerge merge``; Conflict Analysis runs pass 1 and the plan only.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from rich.console import Console

import loramerge
from loramerge.api import analyze as run_analysis
from loramerge.api import merge as run_merge
from loramerge.config import LoraInput, MergeConfig
from loramerge.enums import OutputFormat
from loramerge.formats.advice import format_advice
from loramerge.pipeline import MergeResult
from loramerge.report import Report, render_text

from . import cache, heatmap, host, patching, savepath
from . import settings as setting_widgets
from .errors import LoraOptimizerError, user_errors
from .stack import StackEntry, as_stack

log = logging.getLogger("loramerge")
SAVE_ADVICE_CLIENTS = ("comfyui_0.3.64", "diffusers")  # where a saved LoRA goes next

CATEGORY = "loaders/loramerge"
STACK, SETTINGS, MERGE_DATA = "LORA_STACK", "LORA_OPTIMIZER_SETTINGS", "LORA_MERGE_DATA"
STRENGTH = {"default": 1.0, "min": -20.0, "max": 20.0, "step": 0.01}
AS_SETTINGS = "as settings"


@dataclass(frozen=True)
class MergeData:
    """The LORA_MERGE_DATA value: a merge result and what produced it (Save Merged LoRA re-uses both)."""

    result: MergeResult
    inputs: tuple[LoraInput, ...]
    options: dict


def _options(values: dict | None) -> dict:
    return (
        dict(values)
        if values is not None
        else setting_widgets.to_options({}, resolve_base=host.base_path, resolve_device=host.device_name)
    )


def _inputs(lora_stack) -> tuple[LoraInput, ...]:
    entries = [e for e in as_stack(lora_stack) if not e.off]
    if not entries:
        raise LoraOptimizerError(
            "the LoRA stack is empty (or every LoRA in it has strength 0): connect LoRA Stack nodes"
        )
    return tuple(e.to_input(host.lora_path(e.lora_name)) for e in entries)


def merged(inputs: tuple[LoraInput, ...], options: dict) -> tuple[MergeResult, bool]:
    """The merge of `inputs` with `options`, from the cache when nothing changed; (result, cache hit)."""

    def compute():
        with user_errors("LoRA Optimizer"):
            return run_merge(inputs, progress=host.progress(2), **options)

    return cache.cached(cache.key_of("merge", inputs, options), compute)


def report_text(report: Report) -> str:
    buf = io.StringIO()
    render_text(report, Console(file=buf, width=120, no_color=True, highlight=False, emoji=False))
    return buf.getvalue()


class LoraStack:
    """One LoRA of the stack; chain them through `lora_stack`."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (STACK,)
    RETURN_NAMES = ("lora_stack",)
    FUNCTION = "stack"
    DESCRIPTION = "Adds a LoRA from the loras folder to the stack the LoRA Optimizer merges."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora_name": (host.lora_names(), {"tooltip": "a LoRA from ComfyUI's loras folder"}),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "strength on the diffusion model"}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "strength on the text encoders"}),
                "preserve": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "hold this LoRA out of the merge and add it on top at its strength"},
                ),
                "include": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "only targets matching this regex (e.g. 'input_blocks|te1'); empty = all",
                    },
                ),
                "exclude": ("STRING", {"default": "", "tooltip": "leave out targets matching this regex"}),
            },
            "optional": {
                "lora_stack": (STACK, {"tooltip": "the stack so far"}),
                "block_weights": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "A1111 LoRA Block Weight: a preset (OUTALL, INS, MIDD, ALL0.5, ...) or one weight "
                        "per block (SD1.5: 17 or 26 values, SDXL: 12 or 20, FLUX: 61); empty = all 1",
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, lora_name, **_):
        """Re-run when the file changes on disk (ComfyUI compares this value between runs)."""
        try:
            return repr(cache.file_identity(host.lora_path(lora_name))[1:3])
        except (LoraOptimizerError, OSError):
            return "missing"

    def stack(
        self, lora_name, strength_model, strength_clip, preserve, include, exclude, lora_stack=None, block_weights=""
    ):
        host.lora_path(lora_name)  # a missing file fails here, at the node that names it
        entry = StackEntry(
            lora_name, float(strength_model), float(strength_clip), bool(preserve), include, exclude, block_weights
        )
        return (as_stack(lora_stack) + (entry,),)


class OptimizerSettings:
    """Every option of ``loramerge merge``, with its defaults."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (SETTINGS,)
    RETURN_NAMES = ("settings",)
    FUNCTION = "settings"
    DESCRIPTION = "Options of the merge (strategy selection, sparsification, rank, seed, ...)."

    @classmethod
    def INPUT_TYPES(cls):
        return setting_widgets.input_types()

    def settings(self, **values):
        return (setting_widgets.to_options(values, resolve_base=host.base_path, resolve_device=host.device_name),)


class LoraOptimizer:
    """Merges the stack per weight group and patches MODEL and CLIP with the result (nothing written)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", MERGE_DATA)
    RETURN_NAMES = ("model", "clip", "report", "merge_data")
    FUNCTION = "optimize"
    DESCRIPTION = (
        "Merges the LoRA stack with loramerge (a strategy per weight group) and applies the merged LoRA "
        "like LoraLoader does; the report says what was chosen and why."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "lora_stack": (STACK,),
                "output_strength": (
                    "FLOAT",
                    {**STRENGTH, "tooltip": "strength of the merged LoRA on the model (LoraLoader's strength_model)"},
                ),
                "output_strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "strength on CLIP (strength_clip)"}),
            },
            "optional": {
                "clip": ("CLIP",),
                "settings": (SETTINGS,),
                "merge_formula": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "merge in steps, e.g. '(1+2):0.6 + 3:0.4': numbers are the stack's LoRAs in order "
                        "(those at strength 0 are skipped and not numbered), each bracket is a merge of its own; "
                        "empty = one merge of the whole stack (docs/RECIPES.md)",
                    },
                ),
            },
        }

    def optimize(
        self, model, lora_stack, output_strength, output_strength_clip, clip=None, settings=None, merge_formula=""
    ):
        options = _options(settings)
        if merge_formula.strip():
            options = {**options, "formula": merge_formula.strip()}  # `loramerge.merge` takes it with the options
        inputs = _inputs(lora_stack)
        result, hit = merged(inputs, options)
        new_model, new_clip, head = apply_merge(model, clip, result, output_strength, output_strength_clip, hit)
        return new_model, new_clip, head + report_text(result.report), MergeData(result, inputs, options)


def apply_merge(model, clip, result: MergeResult, strength_model: float, strength_clip: float, hit: bool):
    """MODEL and CLIP patched with a merge result like LoraLoader would, and the summary lines."""
    sd = patching.kohya_state_dict(result)
    placement = patching.place(
        sd, host.key_map(model, clip), host.weight_shapes(model, clip), text_encoders=clip is not None
    )
    warnings = _check(placement, result, host.model_name(model), strict=result.inputs.cfg.strict)
    patches = host.to_patches(placement.select(sd), placement.placed)
    new_model, new_clip = host.apply(model, clip, patches, strength_model, strength_clip)
    return new_model, new_clip, _summary(result, placement, patches, strength_model, strength_clip, hit, warnings)


def _check(placement: patching.Placement, result: MergeResult, model: str, *, strict: bool) -> list[str]:
    """Refuse LoRAs for another model; list (non-strict) or refuse (strict) what does not land."""
    table = result.inputs.table
    family = f"{table.family or table.name} ({table.name})" if table else result.inputs.architecture
    bad = placement.missing + placement.mismatched
    bad_on_model = [b for b in bad if not patching.is_text_encoder(b.split(":")[0])]
    placed_on_model = [s for s in placement.placed if not patching.is_text_encoder(s)]
    if not placement.placed and not bad:
        raise LoraOptimizerError("LoRA Optimizer: the merged LoRA only changes the text encoders: connect CLIP")
    if bad and (not placement.placed or (bad_on_model and not placed_on_model)):
        shown = bad_on_model or bad
        kind = "diffusion-model modules" if bad_on_model else "modules"
        raise LoraOptimizerError(
            f"LoRA Optimizer: the merged LoRA does not fit this {model} model: none of its {len(shown)} {kind} "
            f"exist there with the same shape (e.g. {shown[0]}). The LoRAs look like {family} LoRAs; use LoRAs "
            "made for the loaded model."
        )
    if bad and strict:
        listed = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise LoraOptimizerError(
            f"LoRA Optimizer: {len(bad)} modules of the merged LoRA ({family}) do not fit this {model} model:\n  "
            f"{listed}\nIf the LoRAs are for this model, set strict = false in LoRA Optimizer Settings to apply "
            "the rest (the report lists what was left out)."
        )
    warnings = [f"not in this {model} model, left out: {b}" for b in bad[:20]]
    if len(bad) > 20:
        warnings.append(f"... and {len(bad) - 20} more modules left out")
    if placement.skipped:
        warnings.append(f"no CLIP connected: {len(placement.skipped)} text-encoder modules not applied")
    return warnings


def _summary(result, placement, patches, strength_model, strength_clip, hit, warnings) -> str:
    kinds = ", ".join(f"{k}: {n}" for k, n in patching.summarize(patches).items())
    n_te = sum(1 for s in placement.placed if patching.is_text_encoder(s))
    lines = [
        f"loramerge {loramerge.__version__}: {len(result.groups)} groups merged "
        f"({'cached result' if hit else 'computed'})",
        f"applied {len(patches)} patches ({kinds}): {len(placement.placed) - n_te} on the model at strength "
        f"{strength_model:g}, {n_te} on CLIP at strength {strength_clip:g}",
    ]
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines) + "\n\n"


class SaveMergedLora:
    """Writes the optimizer's merge as a LoRA file inside the loras folder."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Saves the merged LoRA (with its recipe in the header) into the loras folder, and its HTML report "
        "beside it (same name, .html; needs matplotlib)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "merge_data": (MERGE_DATA,),
                "file_name": (
                    "STRING",
                    {
                        "default": "loramerge/merged",
                        "tooltip": "name inside the loras folder (subfolders allowed; .safetensors is added)",
                    },
                ),
                "format": ([AS_SETTINGS, *(f.value for f in OutputFormat)], {"default": AS_SETTINGS}),
                "rank": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 4096,
                        "tooltip": "re-factorise every group to this rank; 0 = as merged",
                    },
                ),
                "error_target": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 0.99,
                        "step": 0.001,
                        "tooltip": "re-factorise to this relative error instead; 0 = off",
                    },
                ),
                "overwrite": ("BOOLEAN", {"default": False}),
            }
        }

    def save(self, merge_data: MergeData, file_name, format, rank, error_target, overwrite):
        path = savepath.save_path(host.loras_root(), file_name)
        if rank and error_target:
            raise LoraOptimizerError("Save Merged LoRA: set a rank or an error target, not both")
        if any(path.samefile(inp.path) for inp in merge_data.inputs if path.exists()):
            raise LoraOptimizerError(f"Save Merged LoRA: {path} is one of the merged LoRAs; choose another name")
        if path.exists() and not overwrite:
            raise LoraOptimizerError(f"Save Merged LoRA: {path} exists; choose another name or turn on overwrite")
        result = merge_data.result
        if rank or error_target:
            options = {**merge_data.options, "rank": rank or None, "rel_error": error_target or None}
            result, _ = merged(merge_data.inputs, options)
        fmt = merge_data.options.get("format", OutputFormat.KOHYA.value) if format == AS_SETTINGS else format
        path.parent.mkdir(parents=True, exist_ok=True)
        with user_errors("Save Merged LoRA"):
            written = result.save(path, fmt, overwrite=overwrite)
        lines = [f"saved {path} ({written.format}, {written.dtype})"]
        if written.widened:
            lines.append(
                f"warning: {len(written.widened)} tensor(s) beyond the {written.dtype} range were written in float32"
            )
        advice = format_advice(written.format, result.inputs.architecture, clients=SAVE_ADVICE_CLIENTS, style="node")
        lines += [f"warning: {line}" for line in advice]
        lines.append(_save_report_html(result.report.model_copy(update={"output": written}), path, overwrite))
        for line in lines[1:]:
            if line.startswith("warning: "):
                log.warning("Save Merged LoRA: %s", line.removeprefix("warning: "))
        return {"ui": {"text": lines}, "result": (str(path),)}


def _save_report_html(report: Report, lora_path, overwrite: bool) -> str:
    """The HTML report next to the saved LoRA (``name.html``); a warning line instead when it cannot be."""
    from loramerge.errors import LoraMergeError

    html_path = lora_path.with_suffix(".html")
    if html_path.exists() and not overwrite:
        return f"warning: report not written: {html_path} exists (turn on overwrite to replace it)"
    try:
        report.save_html(html_path)
    except LoraMergeError as exc:  # matplotlib missing: the LoRA is saved all the same
        return f"warning: report not written: {exc}"
    return f"report {html_path}"


class ConflictAnalysis:
    """Pass 1 and the plan, no merge: the report and a heatmap of conflict and chosen strategy per group."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("report", "heatmap")
    FUNCTION = "analyze"
    DESCRIPTION = "Shows how the LoRAs of the stack interfere, group by group, and what the merge would do."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"lora_stack": (STACK,)}, "optional": {"settings": (SETTINGS,)}}

    def analyze(self, lora_stack, settings=None):
        options = _options(settings)
        inputs = _inputs(lora_stack)

        def compute():
            with user_errors("Conflict Analysis"):
                return run_analysis(MergeConfig(inputs=inputs, **options), progress=host.progress(1)).report()

        report, _ = cache.cached(cache.key_of("analyze", inputs, options), compute)
        return report_text(report), heatmap.render([g.model_dump() for g in report.groups])


from . import tuner_nodes  # noqa: E402  (its nodes build on the helpers above)

NODE_CLASS_MAPPINGS: dict[str, type] = {
    **tuner_nodes.NODE_CLASS_MAPPINGS,
    "LoramergeLoraStack": LoraStack,
    "LoramergeLoraOptimizer": LoraOptimizer,
    "LoramergeOptimizerSettings": OptimizerSettings,
    "LoramergeSaveMergedLora": SaveMergedLora,
    "LoramergeConflictAnalysis": ConflictAnalysis,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    **tuner_nodes.NODE_DISPLAY_NAME_MAPPINGS,
    "LoramergeLoraStack": "LoRA Stack (loramerge)",
    "LoramergeLoraOptimizer": "LoRA Optimizer (loramerge)",
    "LoramergeOptimizerSettings": "Optimizer Settings (loramerge)",
    "LoramergeSaveMergedLora": "Save Merged LoRA (loramerge)",
    "LoramergeConflictAnalysis": "Conflict Analysis (loramerge)",
}
