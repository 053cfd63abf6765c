"""A ComfyUI 0.3.64 copy that is missing or broken makes the 0.3.64 checks skip with a reason
naming the folder; it never fails the suite for that cause (``_comfy064.run_worker``)."""

from __future__ import annotations

import re

import pytest

from ._comfy064 import ENV_FOLDER, REQUIRED, missing_reason, run_worker, source_folder


def test_missing_copy_skips_naming_the_folder(tmp_path):
    folder = tmp_path / "no-comfyui-here"
    assert str(folder) in missing_reason(folder)
    with pytest.raises(pytest.skip.Exception, match=re.escape(str(folder))):
        run_worker(folder, {"cells": []}, tmp_path / "work")
    (folder / "comfy").mkdir(parents=True)
    (folder / "comfy" / "lora.py").write_text("")
    reason = missing_reason(folder)  # a partial copy: still missing, and what is missing is named
    assert str(folder) in reason and "comfy/options.py" in reason and "comfy/lora.py" not in reason


def test_broken_copy_skips_naming_the_folder(tmp_path):
    """Every file a copy needs is there, but ComfyUI does not import: the worker reports the import
    error and the checks skip with the folder and the error in the reason."""
    folder = tmp_path / "broken-comfyui"
    for name in REQUIRED:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("")
    (folder / "comfy" / "__init__.py").write_text("")
    (folder / "comfy" / "options.py").write_text("raise ImportError('this copy is broken on purpose')\n")
    assert missing_reason(folder) is None
    with pytest.raises(pytest.skip.Exception, match=re.escape(str(folder)) + ".*broken on purpose"):
        run_worker(folder, {"cells": []}, tmp_path / "work")


def test_folder_is_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_FOLDER, str(tmp_path))
    assert source_folder() == tmp_path
    monkeypatch.delenv(ENV_FOLDER)
    assert source_folder().name == "comfyui-0.3.64"
