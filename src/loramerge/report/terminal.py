"""Text from files and arguments made safe for a terminal: shown as data, never acted on.

Metadata values, key names and paths can hold ESC/NUL/other control characters (a file could move
the cursor, clear the screen or retitle the terminal) and rich markup (``[/]`` raises a MarkupError,
``[red]`` restyles). `shown` writes control characters the way Python's repr does (``\\x1b``) and
escapes markup; the consoles that print it are made with ``emoji=False`` (``:abc:`` stays text).
"""

from __future__ import annotations

import re

# C0, DEL, C1; the bidirectional overrides and isolates; the line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _as_repr(m: re.Match[str]) -> str:
    return repr(m.group())[1:-1]


def plain(value: object, *, newlines: bool = False) -> str:
    """`value` as text with every control character written as its escape (``\\x1b``, ``\\n``);
    with `newlines`, line breaks are kept (messages of several lines)."""
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(_as_repr, str(value))


_BRACKET = re.compile(
    r"(\\*)(\[(?:[a-z#/@][^\[]*?\])?)"
)  # a "[" and the backslashes before it; a tag if it looks like one


def _escape_bracket(m: re.Match[str]) -> str:
    backslashes, bracket = len(m.group(1)), m.group(2)
    if bracket != "[":  # looks like a tag: rich reads 2k+1 backslashes as k backslashes and a literal tag
        return "\\" * (2 * backslashes + 1) + bracket
    # a lone "[": rich drops one backslash right before it (rich.markup.escape leaves this case alone)
    return "\\" * (backslashes + 1 if backslashes else 0) + bracket


def markup_escaped(text: str) -> str:
    """`text` as rich markup that renders as `text` exactly (brackets and backslashes included), where
    no markup tag follows it directly."""
    return _BRACKET.sub(_escape_bracket, text)


def shown(value: object, *, newlines: bool = False) -> str:
    """`plain(value)` as rich markup that renders as that text: for strings that rich parses as markup."""
    return markup_escaped(plain(value, newlines=newlines))
