"""Text from files and arguments made safe for a terminal: shown as data, never acted on.

Metadata values, key names and paths can hold ESC/NUL/other control characters (a file could move
the cursor, clear the screen or retitle the terminal) and rich markup (``[/]`` raises a MarkupError,
``[red]`` restyles). `shown` writes control characters the way Python's repr does (``\\x1b``) and
escapes markup; the consoles that print it are made with ``emoji=False`` (``:abc:`` stays text).
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0, DEL, C1; the bidirectional overrides and isolates; the line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _as_repr(m: re.Match[str]) -> str:
    return repr(m.group())[1:-1]


def plain(value: object, *, newlines: bool = False) -> str:
    """`value` as text with every control character written as its escape (``\\x1b``, ``\\n``);
    with `newlines`, line breaks are kept (messages of several lines)."""
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(_as_repr, str(value))


def shown(value: object, *, newlines: bool = False) -> str:
    """`plain(value)` with rich markup escaped: for strings that rich parses as markup."""
    return escape(plain(value, newlines=newlines))
