"""Facts that once lived twice: each now has one source, pinned here."""

from __future__ import annotations

from loramerge.architectures import PRESET_OF, TABLES
from loramerge.enums import UNKNOWN_ARCH
from loramerge.formats import dialects
from loramerge.presets import PRESETS, preset_for
from loramerge.report.model import schema_json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_qwen_image_takes_the_tables_preset():
    assert TABLES["qwen_image"].preset == "dit"
    assert preset_for("qwen_image").name == "dit"


def test_every_architecture_takes_its_tables_preset():
    for name, table in TABLES.items():
        assert preset_for(name).name == table.preset, name
    assert preset_for(UNKNOWN_ARCH).name == PRESET_OF[UNKNOWN_ARCH] == "sd_unet"
    assert preset_for("wan").orthogonal_floor == 1.0 and PRESETS["dit"].orthogonal_floor != 1.0  # the video floor


def test_written_branch_prefixes_are_read_back():
    read = {p for p, _ in dialects._KOHYA_PREFIXES} | {p for p, _, _ in dialects._DOTTED_PREFIXES}
    for branch, prefix in dialects.KOHYA_PREFIX.items():
        assert prefix + "_" in read and dict(dialects._KOHYA_PREFIXES)[prefix + "_"] is branch
    for branch, prefix in dialects.DIFFUSERS_PREFIX.items():
        assert prefix + "." in read


def test_report_schema_doc_is_generated_from_the_model():
    assert (DOCS / "report.schema.json").read_text() == schema_json(), \
        "regenerate: python -c 'from loramerge.report.model import schema_json; print(schema_json(), end=\"\")' " \
        "> docs/report.schema.json"
