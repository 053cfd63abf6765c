"""Everything that talks to ComfyUI itself: its model folders, its LoRA key maps, its ModelPatcher,
its progress bar. The only module of the pack (and of the repository) that imports ``comfy`` or
``folder_paths``; it uses interfaces every ComfyUI version since 2023 has.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import comfy.lora
import comfy.model_management
import comfy.utils
import folder_paths

from .errors import LoraOptimizerError

LORAS = "loras"
BASE_FOLDERS = ("checkpoints", "diffusion_models", "unet")


def lora_names() -> list[str]:
    return folder_paths.get_filename_list(LORAS)


def lora_path(name: str) -> str:
    path = folder_paths.get_full_path(LORAS, name)
    if path is None or not os.path.isfile(path):
        folders = ", ".join(folder_paths.get_folder_paths(LORAS))
        raise LoraOptimizerError(
            f"LoRA '{name}' was not found in the loras folder ({folders}); "
            "was it moved or deleted? Pick it again in the LoRA Stack."
        )
    return path


def loras_root() -> str:
    folders = folder_paths.get_folder_paths(LORAS)
    if not folders:
        raise LoraOptimizerError("ComfyUI has no loras folder configured")
    return folders[0]


def base_path(name: str) -> str:
    """A base model given as a path, or as a name in the checkpoints / diffusion_models folders."""
    if os.path.isabs(name):
        if not os.path.isfile(name):
            raise LoraOptimizerError(f"LoRA Optimizer Settings: base model {name} does not exist")
        return name
    for folder in BASE_FOLDERS:
        if folder in folder_paths.folder_names_and_paths:
            path = folder_paths.get_full_path(folder, name)
            if path is not None:
                return path
    raise LoraOptimizerError(
        f"LoRA Optimizer Settings: base model '{name}' is not in "
        f"{' / '.join(BASE_FOLDERS)}; give its full path or leave base empty"
    )


def device_name(choice: str) -> str:
    return str(comfy.model_management.get_torch_device()) if choice == "comfyui" else choice


def key_map(model, clip) -> dict:
    """ComfyUI's map from LoRA key stems to the loaded models' weights (what ``load_lora_for_models`` builds)."""
    keys: dict = {}
    if model is not None:
        keys = comfy.lora.model_lora_keys_unet(model.model, keys)
    if clip is not None:
        keys = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, keys)
    return keys


def weight_shapes(model, clip) -> dict[str, tuple[int, ...]]:
    """Shapes of every weight the patchers can patch (state-dict names, as key-map targets use)."""
    shapes = {}
    if model is not None:
        shapes.update({k: tuple(v.shape) for k, v in model.model.state_dict().items()})
    if clip is not None:
        shapes.update({k: tuple(v.shape) for k, v in clip.cond_stage_model.state_dict().items()})
    return shapes


def model_name(model) -> str:
    config = getattr(model.model, "model_config", None)
    return type(config).__name__ if config is not None else type(model.model).__name__


def to_patches(sd: Mapping, keys: Mapping) -> dict:
    """ComfyUI's own ``load_lora``: tensors -> patches keyed by model weight."""
    return comfy.lora.load_lora(dict(sd), dict(keys))


def apply(model, clip, patches: Mapping, strength_model: float, strength_clip: float):
    """Patched clones, as ``comfy.sd.load_lora_for_models`` makes them; the inputs stay untouched."""
    new_model = new_clip = None
    applied = set()
    if model is not None:
        new_model = model.clone()
        applied |= set(new_model.add_patches(patches, strength_model))
    if clip is not None:
        new_clip = clip.clone()
        applied |= set(new_clip.add_patches(patches, strength_clip))
    left = [k for k in patches if k not in applied]
    if left:
        raise LoraOptimizerError(f"{len(left)} patches fit neither the model nor CLIP, e.g. {left[:3]}")
    return new_model, new_clip


def progress(stages: int) -> Callable[[str, str, int, int], None]:
    """A loramerge progress callback driving ComfyUI's progress bar over `stages` passes (and
    honouring ComfyUI's Cancel between groups)."""
    bar = comfy.utils.ProgressBar(stages)
    seen: dict[str, int] = {}

    def update(stage: str, key: str, n: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        index = seen.setdefault(stage, len(seen))
        bar.update_absolute(index * total + n + 1, stages * total)

    return update
