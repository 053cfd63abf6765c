"""Text from files and arguments reaches the terminal as text: control characters (ESC, NUL, BEL,
bidi overrides) are shown escaped the way Python's repr writes them, rich markup and emoji codes
are printed as written (no MarkupError, no restyling, no emoji). Files with hostile metadata, key
names and file names go through `inspect`, `merge` (report and error paths) and `convert`."""

from __future__ import annotations

import io
import itertools
import os

import pytest
from rich.console import Console

from loramerge.report.terminal import plain, shown
from tests.trust_cli.helpers import cli_process, synthetic_kohya

HOSTILE = "\x1b[2J\x1b]0;pwned\x07red\x00 [/] [bold]b[/bold] \\[x] :smile: \u202eabc"
KEY_PREFIX = "bl\x1b[2Jk"


@pytest.fixture()
def hostile(tmp_path):
    meta = {"ss_training_comment": HOSTILE, "ss_output_name": "[/]"}
    a = synthetic_kohya(tmp_path / "e[b]v\x1bil.safetensors", 2, 8, 2, 0, metadata=meta, prefix=KEY_PREFIX)
    b = synthetic_kohya(tmp_path / "two.safetensors", 2, 8, 2, 1, prefix=KEY_PREFIX)
    return a, b


WIDE = {**os.environ, "COLUMNS": "400"}  # no table wrapping when piped


def _clean(text: str) -> None:
    assert "\x1b" not in text and "\x00" not in text and "\x07" not in text and "\u202e" not in text
    assert "Traceback" not in text and "MarkupError" not in text and "\N{SMILING FACE WITH OPEN MOUTH}" not in text


def test_inspect_shows_hostile_metadata_and_names_as_text(hostile):
    a, _ = hostile
    proc = cli_process("inspect", a, "--arch", "unknown", env=WIDE)
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout + proc.stderr)
    assert "e[b]v\\x1bil.safetensors" in proc.stdout  # the title: the file name
    flat = "".join(proc.stdout.split())  # the table wraps long cells: compare without the layout
    assert "".join(plain(HOSTILE).split()) in flat.replace("│", "")
    assert "metass_output_name│[/]" in flat


def test_merge_report_shows_hostile_names_as_text(hostile):
    a, b = hostile
    proc = cli_process("merge", a, b, "--arch", "unknown", "--dry-run", env=WIDE)
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout + proc.stderr)
    assert "e[b]v\\x1bil" in proc.stdout and "bl\\x1b[2Jk_0" in proc.stdout and "bl\\x1b[2Jk_1" in proc.stdout


def test_errors_show_hostile_keys_and_arguments_as_text(hostile, tmp_path):
    a, b = hostile
    proc = cli_process("merge", a, b, "--arch", "sdxl", "-o", tmp_path / "o.safetensors")  # keys do not fit sdxl
    assert proc.returncode == 2
    _clean(proc.stderr)
    assert "key(s) do not fit architecture 'sdxl'" in proc.stderr and "lora_unet_bl\\x1b[2Jk_0" in proc.stderr
    proc = cli_process("inspect", tmp_path / "no:smile:such[/]\x1b[31m.safetensors")
    assert proc.returncode == 2
    _clean(proc.stderr)
    assert "no:smile:such[/]\\x1b[31m.safetensors: file not found" in proc.stderr
    proc = cli_process("convert", a, "-o", tmp_path / "c[red]:smile:.safetensors", "--arch", "unknown")
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout + proc.stderr)
    assert "c[red]:smile:.safetensors" in proc.stdout


def test_plain_writes_control_characters_as_repr_does():
    assert plain("a\x1b[1mb\x00\t\n\x7f\x9b\u202e\u2066c") == "a\\x1b[1mb\\x00\\t\\n\\x7f\\x9b\\u202e\\u2066c"
    assert plain("two\nlines\x1b", newlines=True) == "two\nlines\\x1b"
    assert plain("ordinary text: é, 日本, ✓") == "ordinary text: é, 日本, ✓"


def test_shown_renders_as_the_text_itself():
    """Every string of up to 5 characters over the characters that matter to rich markup renders as
    itself inside our own markup (an exhaustive check, not a sample)."""
    console = Console(file=io.StringIO(), emoji=False, width=1000, highlight=False, color_system=None)
    for n in range(1, 6):
        for chars in itertools.product("[\\]a/#:", repeat=n):
            text = "".join(chars)
            console.file = io.StringIO()
            console.print(f"[bold]x[/bold] {shown(text)} [red]y[/red]", soft_wrap=True)
            assert console.file.getvalue() == f"x {text} y\n", repr(text)
