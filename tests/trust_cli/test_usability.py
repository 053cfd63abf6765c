"""Small things a new user meets first: `--version`; the same LoRA given twice is merged as asked
but named in a warning; `--dry-run` says that nothing was written; an output name without
``.safetensors`` is refused with the fix; `convert --dtype` writes that precision; `import loramerge`
in a script next to a clone (or inside it) gets the library, not the ComfyUI entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from loramerge.api import merge
from loramerge.convert import convert
from loramerge.errors import OutputError
from loramerge.version import __version__
from tests.trust_cli.helpers import ROOT, cli, cli_process, examples, listing  # noqa: F401


def test_version(capsys):
    code, out, _ = cli(["--version"], capsys)
    assert code == 0 and out == f"loramerge {__version__}\n"


def test_the_same_lora_twice_is_named_and_merged_as_asked(examples, tmp_path, capsys):
    style, detail, _ = examples
    again = tmp_path / "link.safetensors"  # another name of the same file
    again.symlink_to(style)
    code, _, err = cli(
        [
            "merge",
            f"{style}:0.5",
            detail,
            f"{again}:0.5",
            "-o",
            tmp_path / "o.safetensors",
            "-q",
            "--mode",
            "weighted_sum",
            "--no-auto-strength",
            "--dtype",
            "float32",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"warning: {again} is given more than once (also as {style})" in err
    assert err.count("warning:") == 1
    # merged as asked: twice at 0.5 is the file once at 1.0
    with merge(
        [style, detail], mode="weighted_sum", auto_strength=False, dtype="float32", output=tmp_path / "once.safetensors"
    ):
        pass
    twice, once = _deltas(tmp_path / "o.safetensors"), _deltas(tmp_path / "once.safetensors")
    assert twice.keys() == once.keys() and len(once) > 100
    for k in once:
        torch.testing.assert_close(twice[k], once[k], rtol=1e-4, atol=1e-6)


def _deltas(path):
    """ΔW of every module of a written file, read back by the library's reader (alpha/rank included)."""
    from loramerge.formats.reader import AdapterFile

    f = AdapterFile(path)
    return {e.stem: f.patches(e)["weight"].dense() for e in f.entries.values()}


def test_dry_run_says_nothing_was_written(examples, tmp_path, capsys):
    style, detail, _ = examples
    before = listing(tmp_path)
    code, _, err = cli(["merge", style, detail, "--dry-run", "-q"], capsys)
    assert code == 0 and "note: dry run: no LoRA file was written\n" in err
    assert listing(tmp_path) == before
    code, _, err = cli(["merge", style, detail, "--dry-run", "-q", "--report-json", tmp_path / "r.json"], capsys)
    assert code == 0 and f"dry run: no LoRA file was written; the report is in {tmp_path / 'r.json'}" in err
    assert listing(tmp_path) == sorted(before + ["r.json"])


@pytest.mark.parametrize("name", ["noext", "merged.v2", "merged.ckpt"])
def test_an_output_without_the_safetensors_extension_is_refused(examples, tmp_path, capsys, name):
    style, detail, _ = examples
    before = listing(tmp_path)
    code, _, err = cli(["merge", style, detail, "-o", tmp_path / name, "-q"], capsys)
    assert code == 2
    assert f"error: {tmp_path / name}: an output needs the .safetensors extension" in err
    assert f"give {tmp_path / (name + '.safetensors')}" in err
    code, _, err = cli(["convert", style, "-o", tmp_path / name], capsys)
    assert code == 2 and "needs the .safetensors extension" in err
    with pytest.raises(OutputError, match="needs the .safetensors extension"):
        convert(style, tmp_path / name)
    assert listing(tmp_path) == before
    code, _, err = cli(["convert", style, "-o", tmp_path / "UPPER.SAFETENSORS"], capsys)
    assert code == 0, err


def test_convert_writes_the_dtype_asked_for(examples, tmp_path, capsys):
    style, _, _ = examples
    for dtype, tag in (("float32", "F32"), ("float16", "F16"), ("bfloat16", "BF16")):
        code, _, err = cli(["convert", style, "-o", tmp_path / f"{dtype}.safetensors", "--dtype", dtype], capsys)
        assert code == 0, err
    with (
        safe_open(tmp_path / "float32.safetensors", "pt") as f32,
        safe_open(tmp_path / "float16.safetensors", "pt") as f16,
    ):
        assert {f32.get_slice(k).get_dtype() for k in f32.keys()} == {"F32"}
        assert {f16.get_slice(k).get_dtype() for k in f16.keys()} == {"F16"}
        for k in list(f32.keys())[:20]:  # the same values, rounded to half precision
            torch.testing.assert_close(f16.get_tensor(k), f32.get_tensor(k).half(), rtol=0, atol=0)
    with safe_open(tmp_path / "bfloat16.safetensors", "pt") as bf:
        assert {bf.get_slice(k).get_dtype() for k in bf.keys()} == {"BF16"}


SCRIPT = """
import sys
if "--no-installed" in sys.argv:  # as on a machine where the library is not installed
    sys.path[:] = [p for p in sys.path if not p.endswith("src")]
import loramerge
from loramerge.api import merge
from loramerge.config import MergeConfig
print(loramerge.__file__, loramerge.__version__, merge.__module__, MergeConfig.__module__)
"""


def _clone(dest: Path) -> Path:
    """The checkout's files as `git clone` would give them, in a folder called loramerge."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    clone = dest / "loramerge"
    for name in filter(None, files):
        if (ROOT / name).is_file() and not name.endswith(".safetensors"):
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    return clone


def test_import_loramerge_beside_a_clone_gets_the_library(tmp_path):
    clone = _clone(tmp_path)
    (tmp_path / "script.py").write_text(SCRIPT)
    (clone / "script.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT / "src")  # the library "installed": found elsewhere on the path
    for script in (tmp_path / "script.py", clone / "script.py"):
        proc = subprocess.run([sys.executable, str(script)], cwd=script.parent, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        file, version, api, config = proc.stdout.split()
        assert Path(file).name == "__init__.py" and Path(file).parent.name == "loramerge"
        assert Path(file).parent != clone and version == __version__
        assert (api, config) == ("loramerge.api", "loramerge.config")
    # not installed anywhere (nothing ending in "src" on the path): the clone's own src/ is the library
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "script.py"), "--no-installed"],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
    )
    if "No module named" in proc.stderr and "loramerge" not in proc.stderr.split("No module named")[1][:14]:
        pytest.skip(f"a dependency is missing outside the venv's path: {proc.stderr.splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.split()[0]) == clone / "src" / "loramerge" / "__init__.py"


def test_the_off_switches_of_boolean_options_turn_them_off():
    """`--no-auto-strength`, `--lenient`, `--no-basis-space` once parsed as the *on* flag (both spellings
    were declared as names of one flag); unset stays None (the recipe's or the default)."""
    import typer

    from loramerge.cli import app
    from loramerge.options import OPTIONS

    command = typer.main.get_command(app).commands["merge"]  # type: ignore[attr-defined]
    switches = [o for o in OPTIONS if "/" in o.cli]
    assert {o.field for o in switches} >= {"auto_strength", "strict", "basis_space", "use_excess", "allow_pickle"}
    for o in switches:
        on, off = o.cli.split("/")
        for argv, want in (([on], True), ([off], False), ([], None)):
            params = command.make_context("merge", ["a.safetensors", "--dry-run", *argv]).params
            assert params[o.field] is want, (o.field, argv)
