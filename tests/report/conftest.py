"""The README's first command (the example merge), run once through the CLI with both reports."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from loramerge.report.model import Report

ROOT = Path(__file__).resolve().parents[2]


def readme_merge_args() -> list[str]:
    """The arguments of the README's first `loramerge merge` command (without its -o)."""
    line = next(ln for ln in (ROOT / "README.md").read_text().splitlines() if "loramerge merge examples/" in ln)
    words = shlex.split(line.split("loramerge merge", 1)[1])
    out = words.index("-o")
    return words[:out] + words[out + 2 :]


@dataclass(frozen=True)
class ExampleMerge:
    report: Report
    html_path: Path
    lora_path: Path
    stdout: str

    @property
    def html(self) -> str:
        return self.html_path.read_text(encoding="utf-8")


@pytest.fixture(scope="package")
def example(tmp_path_factory) -> ExampleMerge:
    pytest.importorskip("matplotlib", reason="the HTML report needs the 'report' extra (matplotlib)")
    folder = tmp_path_factory.mktemp("example")
    html, js, lora = folder / "report.html", folder / "report.json", folder / "merged.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "loramerge.cli",
        "merge",
        *readme_merge_args(),
        "-o",
        str(lora),
        "--report-html",
        str(html),
        "--report-json",
        str(js),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return ExampleMerge(Report.model_validate_json(js.read_text()), html, lora, proc.stdout)
