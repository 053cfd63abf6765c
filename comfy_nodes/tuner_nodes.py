"""The AutoTuner nodes: AutoTuner (stack → best MODEL/CLIP, ranked report, tuner data), Merge Selector
(apply the k-th candidate), Save / Load Tuner Data (JSON inside the loras folder)."""

from __future__ import annotations

import io

from rich.console import Console

from loramerge.api import tune as run_tune
from loramerge.autotune import CommandEvaluator
from loramerge.autotune import data as tdata
from loramerge.autotune.render import render_table
from loramerge.config import MergeConfig
from loramerge.enums import TunerMemory

from . import host, savepath
from .errors import LoraOptimizerError, user_errors
from .nodes import CATEGORY, SETTINGS, STACK, STRENGTH, _inputs, _options, apply_merge, merged, report_text

TUNER_DATA = "LORA_TUNER_DATA"
EVALUATOR = "LORA_TUNER_EVALUATOR"
"""Any object with ``name``, ``score(merged_path, context)`` and ``scalar(scores)`` (loramerge.autotune)."""
JSON = ".json"


def _table(data: dict, rows: int = 10) -> str:
    buf = io.StringIO()
    render_table(data, Console(file=buf, width=120, no_color=True, highlight=False, emoji=False), rows=rows)
    return buf.getvalue()


class AutoTuner:
    """Sweeps the merge options for the stack, merges the best candidates and applies the winner."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", TUNER_DATA)
    RETURN_NAMES = ("model", "clip", "report", "tuner_data")
    FUNCTION = "tune"
    DESCRIPTION = (
        "AutoTuner: scores every option combination from the LoRAs' statistics, merges the top N and ranks "
        "them (by the evaluator when one is connected), then applies the best like LoraLoader does."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "lora_stack": (STACK,),
                "top_n": ("INT", {"default": 3, "min": 1, "max": 50, "tooltip": "candidates merged and measured"}),
                "budget_seconds": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 86400.0,
                        "tooltip": "stop merging candidates after this; 0 = no limit",
                    },
                ),
                "memory": ([m.value for m in TunerMemory], {"default": TunerMemory.AUTO.value}),
                "output_strength": ("FLOAT", {**STRENGTH, "tooltip": "strength of the best merge on the model"}),
                "output_strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "strength on CLIP"}),
            },
            "optional": {
                "clip": ("CLIP",),
                "settings": (
                    SETTINGS,
                    {"tooltip": "options not swept (rank, seed, preset, ...); swept ones are ignored"},
                ),
                "evaluator": (EVALUATOR, {"tooltip": "ranks candidates by what the merge does (loramerge.autotune)"}),
            },
        }

    def tune(
        self,
        model,
        lora_stack,
        top_n,
        budget_seconds,
        memory,
        output_strength,
        output_strength_clip,
        clip=None,
        settings=None,
        evaluator=None,
    ):
        cfg = MergeConfig(inputs=_inputs(lora_stack), **_options(settings))
        with user_errors("AutoTuner"):
            result = run_tune(
                cfg,
                top=int(top_n),
                evaluator=evaluator,
                budget=float(budget_seconds) or None,
                memory=memory,
                keep_best=True,
                progress=host.progress(2),
            )
        assert result.best is not None
        new_model, new_clip, head = apply_merge(
            model, clip, result.best, output_strength, output_strength_clip, result.replayed
        )
        text = head + _table(result.data) + "\n" + report_text(result.best.report)
        return new_model, new_clip, text, result.data


class MergeSelector:
    """Applies the k-th candidate of tuner data (1 = the AutoTuner's choice)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("model", "clip", "report")
    FUNCTION = "select"
    DESCRIPTION = "Merges and applies another candidate of the AutoTuner's ranking."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "tuner_data": (TUNER_DATA,),
                "select": ("INT", {"default": 1, "min": 1, "max": 100000, "tooltip": "rank of the candidate"}),
                "output_strength": ("FLOAT", {**STRENGTH}),
                "output_strength_clip": ("FLOAT", {**STRENGTH}),
            },
            "optional": {"clip": ("CLIP",)},
        }

    def select(self, model, tuner_data, select, output_strength, output_strength_clip, clip=None):
        with user_errors("Merge Selector"):
            cfg = _selected(tuner_data, int(select))
        options = cfg.model_dump(exclude={"inputs"})
        result, hit = merged(cfg.inputs, options)
        new_model, new_clip, head = apply_merge(model, clip, result, output_strength, output_strength_clip, hit)
        label = tuner_data["candidates"][int(select) - 1]["label"]
        return new_model, new_clip, f"candidate {int(select)}: {label}\n" + head + report_text(result.report)


def _selected(data, k: int) -> MergeConfig:
    tdata.check(data, "Merge Selector's tuner data")
    return tdata.selected_config(data, k, "Merge Selector")


def _path(file_name: str, node: str):
    return savepath.save_path(host.loras_root(), file_name, suffix=JSON, node=node)


class SaveTunerData:
    """Writes tuner data as JSON inside the loras folder."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = "Saves the AutoTuner's ranking (loramerge merge --tuner-data reads it too)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tuner_data": (TUNER_DATA,),
                "file_name": ("STRING", {"default": "loramerge/tuner", "tooltip": "name inside the loras folder"}),
                "overwrite": ("BOOLEAN", {"default": False}),
            }
        }

    def save(self, tuner_data, file_name, overwrite):
        path = _path(file_name, "Save Tuner Data")
        if path.exists() and not overwrite:
            raise LoraOptimizerError(f"Save Tuner Data: {path} exists; choose another name or turn on overwrite")
        path.parent.mkdir(parents=True, exist_ok=True)
        with user_errors("Save Tuner Data"):
            tdata.save(tdata.check(tuner_data), path)
        return {"ui": {"text": [f"saved {path}"]}, "result": (str(path),)}


class LoadTunerData:
    """Reads tuner data saved by Save Tuner Data or ``loramerge tune --tuner-data``."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (TUNER_DATA, "STRING")
    RETURN_NAMES = ("tuner_data", "ranking")
    FUNCTION = "load"
    DESCRIPTION = "Loads tuner data from the loras folder; feed it to the Merge Selector."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file_name": ("STRING", {"default": "loramerge/tuner"})}}

    @classmethod
    def IS_CHANGED(cls, file_name):
        try:
            return _path(file_name, "Load Tuner Data").stat().st_mtime_ns
        except (LoraOptimizerError, OSError):
            return "missing"

    def load(self, file_name):
        path = _path(file_name, "Load Tuner Data")
        with user_errors("Load Tuner Data"):
            data = tdata.load(path)
        return data, _table(data)


class CommandEvaluatorNode:
    """An evaluator for the AutoTuner: a command that scores a merged file and prints JSON."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (EVALUATOR,)
    RETURN_NAMES = ("evaluator",)
    FUNCTION = "evaluator"
    DESCRIPTION = (
        "Runs a command on each candidate the AutoTuner merges ({merged} is its path); the command prints a "
        'number or {"score": x} (higher is better). With an evaluator the AutoTuner also sweeps a global strength.'
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "command": ("STRING", {"default": "python score.py {merged}", "multiline": False}),
                "timeout_seconds": ("FLOAT", {"default": 600.0, "min": 1.0, "max": 86400.0}),
            }
        }

    def evaluator(self, command, timeout_seconds):
        if not command.strip():
            raise LoraOptimizerError("Command Evaluator: give a command, e.g. python score.py {merged}")
        return (CommandEvaluator(command.strip(), float(timeout_seconds)),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "LoramergeCommandEvaluator": CommandEvaluatorNode,
    "LoramergeAutoTuner": AutoTuner,
    "LoramergeMergeSelector": MergeSelector,
    "LoramergeSaveTunerData": SaveTunerData,
    "LoramergeLoadTunerData": LoadTunerData,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "LoramergeCommandEvaluator": "Command Evaluator (loramerge)",
    "LoramergeAutoTuner": "AutoTuner (loramerge)",
    "LoramergeMergeSelector": "Merge Selector (loramerge)",
    "LoramergeSaveTunerData": "Save Tuner Data (loramerge)",
    "LoramergeLoadTunerData": "Load Tuner Data (loramerge)",
}
