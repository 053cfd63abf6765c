"""What goes wrong with the output folder is an `error: ...` (exit 2) before the merge where it can be
known before, and leaves the folder as it was: a --report-json folder that does not exist, a folder
that cannot be written to (permissions, a read-only mount: simulated, the tests run as root), a disk
that fills up while the spool or the LoRA is written (simulated by making the write calls fail with
ENOSPC the way the system does)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest

from loramerge.api import merge
from loramerge.errors import OutputError
from tests.trust_cli.helpers import cli, examples, listing, work_must_not_start  # noqa: F401


def test_report_json_into_a_missing_folder_is_refused_before_the_merge(examples, tmp_path, capsys, monkeypatch):
    style, detail, _ = examples
    before = listing(tmp_path)
    work_must_not_start(monkeypatch)
    code, _, err = cli(
        ["merge", style, detail, "-o", tmp_path / "o.safetensors", "--report-json", tmp_path / "no" / "r.json"], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: --report-json {tmp_path / 'no' / 'r.json'}: folder {tmp_path / 'no'} does not exist")
    assert listing(tmp_path) == before


def test_report_json_is_protected_like_the_lora(examples, tmp_path, capsys, monkeypatch):
    style, detail, _ = examples
    work_must_not_start(monkeypatch)
    out, report = tmp_path / "o.safetensors", tmp_path / "r.json"
    report.write_text("keep")
    code, _, err = cli(["merge", style, detail, "-o", out, "--report-json", report, "-q"], capsys)
    assert code == 2 and "--report-json" in err and "--overwrite (-f)" in err
    code, _, err = cli(["merge", style, detail, "-o", out, "--report-json", out, "-q", "-f"], capsys)
    assert code == 2 and "is the -o file too" in err
    code, _, err = cli(["merge", style, detail, "-o", out, "--report-json", style, "-q", "-f"], capsys)
    assert code == 2 and "one of the input LoRAs" in err
    assert report.read_text() == "keep" and not out.exists()


def test_an_existing_folder_as_output_is_refused_before_the_merge(examples, tmp_path, capsys, monkeypatch):
    style, detail, _ = examples
    work_must_not_start(monkeypatch)
    (tmp_path / "sub").mkdir()
    code, _, err = cli(["merge", style, detail, "-o", tmp_path / "sub", "-q"], capsys)
    assert code == 2 and "is a folder; give a file name such as" in err
    assert listing(tmp_path / "sub") == []


def _read_only(monkeypatch, folder: Path, code: int = errno.EROFS) -> None:
    """Every file made in `folder` fails as on a read-only mount (or with EACCES: permissions)."""
    folder = folder.resolve()
    real_mkstemp, real_temporary = tempfile.mkstemp, tempfile.TemporaryFile

    def refused(dir) -> bool:
        return Path(dir if dir is not None else tempfile.gettempdir()).resolve() == folder

    def mkstemp(*a, dir=None, **k):
        if refused(dir):
            raise OSError(code, os.strerror(code))
        return real_mkstemp(*a, dir=dir, **k)

    def temporary(*a, dir=None, **k):
        if refused(dir):
            raise OSError(code, os.strerror(code))
        return real_temporary(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "TemporaryFile", temporary)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_output_folder_is_refused_before_the_work(examples, tmp_path, capsys, monkeypatch, code):
    style, detail, _ = examples
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro, code)
    work_must_not_start(monkeypatch)
    for argv in (["merge", style, detail, "-o", ro / "o.safetensors"], ["convert", style, "-o", ro / "c.safetensors"]):
        rc, _, err = cli(argv, capsys)
        assert rc == 2 and "Traceback" not in err, err
        assert f"folder {ro} cannot be written to ({os.strerror(code)}); choose a folder you can write to" in err
    code_, _, err = cli(
        ["merge", style, detail, "-o", tmp_path / "o.safetensors", "--report-json", ro / "r.json"], capsys
    )
    assert code_ == 2 and f"--report-json {ro / 'r.json'}: folder {ro} cannot be written to" in err
    assert listing(ro) == [] and not (tmp_path / "o.safetensors").exists()


def test_a_read_only_temporary_folder_for_a_dry_run(examples, tmp_path, capsys, monkeypatch):
    """Without -o the spool goes to the system temporary folder: if that is read-only, say to set TMPDIR."""
    style, detail, _ = examples
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    _read_only(monkeypatch, tmp)
    work_must_not_start(monkeypatch)
    code, _, err = cli(["merge", style, detail, "--dry-run", "-q"], capsys)
    assert code == 2
    assert f"error: {tmp}: cannot create the merge's temporary spool file there (Read-only file system)" in err
    assert "set TMPDIR to a folder you can write to" in err


class _FullDisk:
    """A file object on a disk with `room` bytes left: writes past it fail with ENOSPC; with
    `at_flush`, writes are taken (buffered) and flush/close fail instead, as a buffered file does."""

    def __init__(self, real, disk: dict):
        self.real, self.disk = real, disk

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if not self.disk["at_flush"] and self.disk["used"] + n > self.disk["room"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.disk["used"] += n
        return self.real.write(data)

    def flush(self) -> None:
        if self.disk["at_flush"] and self.disk["used"] > self.disk["room"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.real.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name):
        return getattr(self.real, name)


def _fill_up(monkeypatch, room: int, at_flush: bool) -> None:
    real_fdopen = os.fdopen
    disk = {"room": room, "used": 0, "at_flush": at_flush}
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k), disk))


@pytest.mark.parametrize("at_flush", [False, True], ids=["on-write", "on-flush"])
@pytest.mark.parametrize("room", [0, 50_000, 500_000])
def test_a_full_disk_while_the_lora_is_written_leaves_nothing(examples, tmp_path, capsys, monkeypatch, room, at_flush):
    style, detail, _ = examples
    before = listing(tmp_path)
    _fill_up(monkeypatch, room, at_flush)
    code, _, err = cli(["merge", style, detail, "-o", tmp_path / "o.safetensors", "-q"], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert f"error: {tmp_path / 'o.safetensors'}: cannot write the file (No space left on device)" in err
    assert "nothing was written" in err
    assert listing(tmp_path) == before  # no .o.safetensors.XXXX.data.tmp, no spool


def test_a_full_disk_while_the_spool_is_written_leaves_nothing(examples, tmp_path, capsys, monkeypatch):
    style, detail, _ = examples
    before = listing(tmp_path)
    real_pwrite, calls = os.pwrite, []

    def pwrite(fd, data, offset):
        calls.append(offset)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    code, _, err = cli(["merge", style, detail, "-o", tmp_path / "o.safetensors", "-q"], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert f"error: {tmp_path}: cannot write the merge's temporary spool file (No space left on device)" in err
    assert listing(tmp_path) == before


def test_a_full_disk_while_the_report_is_written_takes_the_new_lora_back(examples, tmp_path, capsys, monkeypatch):
    """The report is written after the LoRA (it records what was written): if it fails, the run failed,
    and the LoRA it made is removed with it."""
    style, detail, _ = examples
    before = listing(tmp_path)
    import loramerge.atomic as atomic

    real = atomic.publish

    def publish(tmp, path):
        if str(path).endswith(".json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tmp, path)

    monkeypatch.setattr(atomic, "publish", publish)
    code, _, err = cli(
        ["merge", style, detail, "-o", tmp_path / "o.safetensors", "--report-json", tmp_path / "r.json", "-q"], capsys
    )
    assert code == 2 and "cannot write it (No space left on device)" in err, err
    assert listing(tmp_path) == before


def test_the_api_gives_the_same_errors(examples, tmp_path, monkeypatch):
    style, detail, _ = examples
    _fill_up(monkeypatch, 1000, False)
    with pytest.raises(OutputError, match="No space left on device"):
        merge([style, detail], output=tmp_path / "o.safetensors")
    monkeypatch.undo()
    with merge([style, detail], output=tmp_path / "o.safetensors") as result:
        assert json.loads(result.report.to_json())["output"]["path"] == str(tmp_path / "o.safetensors")
