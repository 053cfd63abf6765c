"""What the tool commands (extract, resize, bake) share: the dtype and report options, the table of
the modules with the largest errors, and the JSON report."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..enums import OutputDtype
from ..options import BY_FIELD
from ._app import console

DtypeOpt = Annotated[
    OutputDtype, typer.Option("--dtype", help=BY_FIELD["dtype"].help[:1].upper() + BY_FIELD["dtype"].help[1:] + ".")
]
ReportJsonOpt = Annotated[
    Optional[Path], typer.Option("--report-json", help="Write every module's figures as JSON here.")
]
SHOWN = 10


def module_table(title: str, rows: list[tuple], headers: tuple[str, ...]) -> None:
    """The `SHOWN` rows with the largest last value: (module, shape, *values)."""
    if not rows:
        return
    table = Table(title=f"{title} ({min(SHOWN, len(rows))} of {len(rows)} modules)", title_justify="left")
    for h in ("module", "shape", *headers):
        table.add_column(h, justify="left" if h in ("module", "shape") else "right")
    for row in sorted(rows, key=lambda r: -r[-1])[:SHOWN]:
        name, shape, *values = row
        table.add_row(name, "×".join(map(str, shape)), *(_cell(v) for v in values))
    console.print(table)


def _cell(v) -> str:
    return f"{v:.2e}" if isinstance(v, float) else str(v)


def write_json(path: Path | None, report) -> None:
    if path is not None:
        path.write_text(json.dumps(dataclasses.asdict(report), indent=2, default=_plain) + "\n")


def _plain(o):
    return o.value if isinstance(o, Enum) else str(o)
