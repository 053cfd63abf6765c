"""The node pack inside ComfyUI 0.3.64 (run by ``_comfy064_worker`` in its subprocess).

1. ComfyUI's own ``nodes.load_custom_node`` loads the clone-shaped copy of this repository from
   ``custom_nodes/loramerge`` (the repository root ``__init__.py`` is the entry point).
2. Its own ``execution.validate_prompt`` accepts an API-format prompt that uses every node of the
   pack with the widget defaults the nodes declare, linked by the types they declare, with core
   nodes (``CheckpointLoaderSimple``, ``PreviewImage``) on either side.
3. One optimizer run on ComfyUI 0.3.64's ``ModelPatcher`` of the tiny SDXL model (its own model
   classes, ``_comfy_models.build``) and a real ``comfy.sd.CLIP``: every patched weight against base +
   the library's merge (``loramerge.merge`` of the same stack); then Save Merged LoRA, whose file must
   be byte-identical to the library's own save of that merge, and which ComfyUI's
   ``comfy.sd.load_lora_for_models`` (what LoraLoader calls) loads to the node's weights bit for bit.

Returns a JSON-able dict; the test process asserts on it.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import torch

PACK_PREFIX = "Loramerge"
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _widget_value(name: str, spec: tuple, lora: str):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        return lora if name == "lora_name" else opts.get("default", kind[0])
    return opts["default"]


def _prompt(pack: dict, loras: tuple[str, str]) -> dict:
    """API-format prompt: checkpoint -> two stacked LoRAs + settings -> optimizer -> save; the stack
    -> conflict analysis -> preview. Widget values are the nodes' declared defaults."""
    links = {
        "model": ["ckpt", 0],
        "clip": ["ckpt", 1],
        "settings": ["settings", 0],
        "merge_data": ["optimizer", 3],
    }
    layout = {
        "stack1": ("LoramergeLoraStack", {}),
        "stack2": ("LoramergeLoraStack", {"lora_stack": ["stack1", 0]}),
        "settings": ("LoramergeOptimizerSettings", {}),
        "optimizer": ("LoramergeLoraOptimizer", {"lora_stack": ["stack2", 0]}),
        "save": ("LoramergeSaveMergedLora", {}),
        "analysis": ("LoramergeConflictAnalysis", {"lora_stack": ["stack2", 0]}),
    }
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["analysis", 1]}},
    }
    for node_id, (class_type, fixed) in layout.items():
        spec = pack[class_type].INPUT_TYPES()
        lora = loras[0] if node_id == "stack1" else loras[1]
        inputs = dict(fixed)
        for part in ("required", "optional"):
            for name, s in spec.get(part, {}).items():
                if name in inputs:
                    continue
                if isinstance(s[0], list) or s[0] in WIDGETS:
                    inputs[name] = _widget_value(name, s, lora)
                elif name in links:
                    inputs[name] = links[name]
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return prompt


def _interface(pack: dict) -> dict:
    """What ComfyUI's /object_info would serve per node (its V1 fields), as plain JSON."""
    out = {}
    for name, cls in pack.items():
        out[name] = {
            "input": {part: sorted(v) for part, v in cls.INPUT_TYPES().items()},
            "output": list(cls.RETURN_TYPES),
            "function": cls.FUNCTION,
            "callable": callable(getattr(cls(), cls.FUNCTION, None)),
            "module": getattr(cls, "RELATIVE_PYTHON_MODULE", None),
        }
    return out


def _clip(comfy, models):
    clip = comfy.sd.CLIP(no_init=True)  # the attributes CLIP.clone copies; no tokenizer needed
    clip.cond_stage_model = models.clip
    clip.patcher = models.clip_patcher
    clip.tokenizer = None
    clip.layer_idx = None
    clip.tokenizer_options = {}
    clip.use_clip_schedule = False
    clip.apply_hooks_to_conds = None
    return clip


def _weights(models, model, clip) -> dict[str, torch.Tensor]:
    patchers = [p for p in (model, getattr(clip, "patcher", None)) if p is not None]
    try:
        for p in patchers:
            p.patch_model()
        return models.state()
    finally:
        for p in patchers:
            p.unpatch_model()


def _group_of(models) -> dict[str, str]:
    """ComfyUI weight key -> loramerge's group key (SDXL: one truth key per weight)."""
    from loramerge import architectures as A
    from tests.formats.test_fixture_truth import canonical

    table = A.get_table("sdxl")
    out = {}
    for key, parts in models.parts.items():
        try:
            out[key] = canonical(table, parts[0].truth)
        except AssertionError:  # not an adaptable module (embeddings, ...): must stay unchanged
            continue
    return out


def check_node_pack(comfy, job: dict, models: dict) -> dict:
    import loramerge
    from loramerge.config import LoraInput
    from tests.clients._comfy_models import build
    from tests.clients._common import assert_exact, compare_weights

    nodes, folder_paths = comfy.nodes, comfy.folder_paths
    root = Path(comfy.root)
    loras, work = Path(job["loras"]), Path(job["work"])
    folder_paths.folder_names_and_paths["loras"] = ([str(loras)], set(folder_paths.supported_pt_extensions))
    checkpoints = work / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "tiny.safetensors").write_bytes(b"")  # only its name is validated
    folder_paths.folder_names_and_paths["checkpoints"] = ([str(checkpoints)], {".safetensors"})
    folder_paths.filename_list_cache.clear()

    out: dict = {}
    clone = root / "custom_nodes" / "loramerge"
    out["loaded"] = asyncio.run(nodes.load_custom_node(str(clone)))
    pack = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith(PACK_PREFIX)}
    out["registered"] = {k: nodes.NODE_DISPLAY_NAME_MAPPINGS.get(k) for k in pack}
    out["pack_file"] = next(
        (m.__file__ for n, m in list(__import__("sys").modules.items()) if n == "loramerge_comfy_nodes"), None
    )
    out["library_file"] = loramerge.__file__
    out["interface"] = _interface(pack)
    names = tuple(f"{n}.safetensors" for n in job["stack"])
    prompt = _prompt(pack, names)
    valid, error, outputs, node_errors = asyncio.run(comfy.execution.validate_prompt("check", prompt, None))
    out["validation"] = {"valid": valid, "error": error, "outputs": sorted(outputs), "node_errors": node_errors}

    # One optimizer run on ComfyUI 0.3.64's ModelPatcher and CLIP.
    if "sdxl" not in models:
        models["sdxl"] = build(comfy, "sdxl")
    sdxl = models["sdxl"]
    clip = _clip(comfy, sdxl)
    (stack,) = (None,)
    strengths = job["strengths"]  # [[model, clip], ...] per stack entry
    for name, (sm, sc) in zip(names, strengths):
        (stack,) = pack["LoramergeLoraStack"]().stack(name, sm, sc, False, "", "", stack)
    s_model, s_clip = job["output_strengths"]
    # Optimizer Settings at its declared defaults, but float32 output: the saved file then holds the
    # very factors the node patched with, and LoraLoader must give the same weights bit for bit.
    widgets = {
        name: spec[1]["default"] for name, spec in pack["LoramergeOptimizerSettings"].INPUT_TYPES()["required"].items()
    }
    (settings,) = pack["LoramergeOptimizerSettings"]().settings(**{**widgets, "dtype": "float32"})
    model2, clip2, report, data = pack["LoramergeLoraOptimizer"]().optimize(
        sdxl.unet_patcher, stack, s_model, s_clip, clip=clip, settings=settings
    )
    out["untouched"] = sdxl.unet_patcher.patches == {} and sdxl.clip_patcher.patches == {}
    after = _weights(sdxl, model2, clip2)

    inputs = [
        LoraInput(path=str(loras / n), strength_model=sm, strength_text_encoder=sc, name=n)
        for n, (sm, sc) in zip(names, strengths)
    ]
    library = loramerge.merge(inputs, dtype="float32")
    out["strategies"] = {"node": data.result.report.strategy_counts, "library": library.report.strategy_counts}
    te = library.inputs.is_text_encoder
    expected = {g.key: g.patch.dense().float() * (s_clip if te(g.key) else s_model) for g in library.groups}
    group_of = _group_of(sdxl)
    try:
        assert_exact(compare_weights(after, sdxl.before, expected, group_of.get), expected, "optimizer node")
        out["weights"] = {"ok": True, "groups": len(expected)}
    except AssertionError as exc:
        out["weights"] = {"ok": False, "error": str(exc)[:2000]}

    # Save Merged LoRA, against the library's own save of its merge.
    saved = pack["LoramergeSaveMergedLora"]().save(data, "merged/pair", "kohya", 0, 0.0, False)
    path = saved["result"][0]
    # beside the node's file: the recipe stores input paths relative to the output's folder
    own = Path(path).parent / "library.safetensors"
    written = library.save(own, "kohya")
    out["save"] = {
        "text": saved["ui"]["text"],
        "path": path,
        "dtype": written.dtype,
        "identical": _sha256(path) == _sha256(own),
    }
    lora = comfy.utils.load_torch_file(path, safe_load=True)
    from tests.clients._common import capture_messages

    with capture_messages(("",)) as messages:
        model3, clip3 = comfy.sd.load_lora_for_models(sdxl.unet_patcher, clip, lora, s_model, s_clip)
    loaded = _weights(sdxl, model3, clip3)
    out["reload"] = {
        "messages": messages.matching("lora key not loaded", "NOT LOADED", "ERROR"),
        "differ": sorted(k for k in after if not torch.equal(after[k], loaded[k]))[:10],
        "changed": sum(not torch.equal(after[k], sdxl.before[k]) for k in after),
    }
    return out
