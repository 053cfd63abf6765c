"""The example merge's HTML report in a real browser: headless Chromium (the Debian package) renders it
to a PNG that is not blank, and the page logs nothing to the console (no error, no refused fetch)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)")  # chromium --enable-logging=stderr: one line per message


def screenshot(page: Path, png: Path, tmp_path: Path, size: str = "1280,2000") -> list[str]:
    """Render `page` into `png`; return the page's console messages."""
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={size}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert png.exists(), proc.stderr[-2000:]
    return [m[1] for line in proc.stderr.splitlines() if (m := CONSOLE.search(line))]


def pixels(png: Path):
    from PIL import Image

    with Image.open(png) as im:
        return im.convert("RGB").getdata()


def test_the_console_check_sees_errors_and_refused_fetches(tmp_path):
    """The detector itself: a script error and a fetch the page's policy refuses both show up."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'\">"
        '<img src="https://example.invalid/x.png"><script>console.error("boom")</script>'
    )
    messages = screenshot(bad, tmp_path / "bad.png", tmp_path, "400,300")
    assert any("boom" in m for m in messages), messages
    assert any("Content Security Policy" in m and "example.invalid" in m for m in messages), messages


def test_example_report_renders_in_chromium(example, tmp_path):
    png = tmp_path / "report.png"
    messages = screenshot(example.html_path, png, tmp_path)
    assert messages == []
    data = list(pixels(png))
    assert len(data) == 1280 * 2000
    grey = [sum(p) / 3 for p in data]
    mean = sum(grey) / len(grey)
    variance = sum((g - mean) ** 2 for g in grey) / len(grey)
    assert variance > 100, variance  # not blank: text, tables and coloured cells
    colours = {p for p in data[::7]}
    assert len(colours) > 200, len(colours)  # heatmap scales, the warning box, text anti-aliasing
    assert sum(1 for r, g, b in data if r > 200 and g < 120 and b < 120) > 500  # red cosine cells of output_blocks.1
