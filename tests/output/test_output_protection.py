"""An input is never overwritten; an existing output only with --overwrite; bad output paths are
refused before any work, leaving nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loramerge.api import merge
from loramerge.convert import convert
from loramerge.errors import OutputError

ROOT = Path(__file__).resolve().parents[2]
A, B = ROOT / "examples" / "style_kohya.safetensors", ROOT / "examples" / "detail_kohya.safetensors"


@pytest.fixture()
def inputs(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    shutil.copy(A, a)
    shutil.copy(B, b)
    return a, b


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loramerge.cli", *map(str, args)], capture_output=True, text=True)


def test_merge_onto_an_input_is_refused_and_the_input_kept(inputs, tmp_path):
    a, b = inputs
    before = a.read_bytes()
    proc = _cli("merge", a, b, "-o", a, "--overwrite", "-q")
    assert proc.returncode == 2 and "one of the input LoRAs" in proc.stderr and "Traceback" not in proc.stderr
    assert a.read_bytes() == before
    link = tmp_path / "link.safetensors"
    os.symlink(a, link)
    with pytest.raises(OutputError, match="one of the input LoRAs"):
        merge([a, b], output=link, overwrite=True)
    with pytest.raises(OutputError, match="one of the input LoRAs"):
        merge([a, b], output=tmp_path / "." / "a.safetensors", overwrite=True)
    assert a.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors", "link.safetensors"]


def test_convert_onto_its_input_is_refused(inputs):
    a, _ = inputs
    before = a.read_bytes()
    with pytest.raises(OutputError, match="one of the input LoRAs"):
        convert(a, a, "kohya", overwrite=True)
    proc = _cli("convert", a, "-o", a)
    assert proc.returncode == 2 and a.read_bytes() == before


def test_an_existing_output_needs_overwrite(inputs, tmp_path):
    a, b = inputs
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    proc = _cli("merge", a, b, "-o", out, "-q")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert out.read_bytes() == b"keep me"
    proc = _cli("merge", a, b, "-o", out, "-q", "-f")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() != b"keep me"
    with merge([a, b]) as result:
        with pytest.raises(OutputError, match="exists"):
            result.save(out)
        assert result.save(out, overwrite=True).path == str(out)


def test_a_folder_as_output_is_refused_before_the_merge(inputs, tmp_path):
    a, b = inputs
    proc = _cli("merge", a, b, "-o", tmp_path, "-q")
    assert proc.returncode == 2 and "is a folder" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]
