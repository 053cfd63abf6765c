"""``--formula``: the short form of a recipe, e.g. ``(1+2):0.6 + 3:0.4``.

Grammar (whitespace is ignored)::

    formula := sum
    sum     := term ("+" term)*
    term    := atom [":" NUMBER ["," NUMBER]]      strength on the model [, on the text encoders]
    atom    := INDEX | "(" sum ")"
    INDEX   := a LoRA argument's position, 1 for the first
    NUMBER  := ["-"] a decimal number with optional exponent (0.6, -1, 2e-1)

A parenthesised sum is a merge step of its own (named ``g1``, ``g2``, ... in the order of its
``(``); the whole formula is the step ``final`` (a formula that is one bracketed sum without a
strength is that sum). A strength in the formula multiplies the strengths given with the LoRA
argument (``a.safetensors:0.5`` as ``1:0.6`` enters at 0.3); block weights come with the argument.
Every step takes the merge options given beside the formula.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config import LoraInput
from .schema import RECIPE_VERSION, Recipe, RecipeError, parse_recipe

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<op>[()+:,-])|(?P<bad>\S))")


@dataclass
class Term:
    atom: int | list[Term]  # an argument's position, or a bracketed sum
    strength: tuple[float, float | None] | None
    group: int = 0  # the number of a bracketed sum (g1, g2, ...)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text) and text[pos:].strip():
            m = _TOKEN.match(text, pos)
            assert m is not None
            kind = m.lastgroup or "bad"
            if kind == "bad":
                self.fail(f"unexpected character '{m.group(kind)}'", m.start(kind))
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0
        self.groups = 0

    def fail(self, problem: str, at: int | None = None) -> None:
        at = len(self.text) if at is None else at
        raise RecipeError(f"formula '{self.text}': {problem} at position {at + 1}\n  {self.text}\n  {' ' * at}^")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = f"'{value}'" if value else ("a number" if kind == "num" else "a token")
            self.fail(f"expected {want}" + (f", found '{tok[1]}'" if tok else " (the formula ends)"), tok and tok[2])
        self.i += 1
        return tok  # type: ignore[return-value]

    def sum(self) -> list[Term]:
        terms = [self.term()]
        while (tok := self.peek()) is not None and tok[1] == "+":
            self.take("+")
            terms.append(self.term())
        return terms

    def term(self) -> Term:
        tok = self.peek()
        if tok is not None and tok[1] == "(":
            self.take("(")
            self.groups += 1
            group = self.groups
            atom: int | list[Term] = self.sum()
            self.take(")")
        else:
            num = self.take(kind="num")
            if not re.fullmatch(r"\d+", num[1]) or int(num[1]) < 1:
                self.fail(f"'{num[1]}' is not a LoRA position (1, 2, ...)", num[2])
            atom, group = int(num[1]), 0
        strength = None
        if (tok := self.peek()) is not None and tok[1] == ":":
            self.take(":")
            model = self.number()
            te = None
            if (tok := self.peek()) is not None and tok[1] == ",":
                self.take(",")
                te = self.number()
            strength = (model, te)
        return Term(atom, strength, group)

    def number(self) -> float:
        sign = 1.0
        if (tok := self.peek()) is not None and tok[1] == "-":
            self.take("-")
            sign = -1.0
        return sign * float(self.take(kind="num")[1])

    def parse(self) -> list[Term]:
        if not self.tokens:
            self.fail("the formula is empty", 0)
        terms = self.sum()
        if (tok := self.peek()) is not None:
            self.fail(f"unexpected '{tok[1]}'", tok[2])
        while len(terms) == 1 and isinstance(terms[0].atom, list) and terms[0].strength is None:
            terms = terms[0].atom  # "(1+2)" is the sum itself
        return terms


def parse_formula(text: str) -> list[Term]:
    """The terms of the top-level sum; RecipeError pointing at the position of a mistake."""
    return _Parser(text).parse()


def formula_recipe(text: str, loras: list[LoraInput], options: dict[str, Any] | None = None) -> Recipe:
    """The recipe `text` stands for over the LoRA arguments `loras` (positions from 1)."""
    terms = parse_formula(text)
    steps: list[dict] = []

    def inputs_of(terms: list[Term]) -> list[dict]:
        out = []
        for t in terms:
            model, te = t.strength if t.strength else (1.0, None)
            if isinstance(t.atom, list):
                steps_before = inputs_of(t.atom)
                steps.append({"name": f"g{t.group}", "inputs": steps_before})
                out.append(_scaled({"step": f"g{t.group}"}, model, te))
                continue
            if t.atom > len(loras):
                raise RecipeError(
                    f"formula '{text}': LoRA {t.atom} is not given (there are {len(loras)} LoRA arguments)"
                )
            lora = loras[t.atom - 1]
            data = lora.model_dump(exclude_defaults=True, exclude={"strength_model", "strength_text_encoder"})
            base_te = lora.strength_text_encoder
            out.append(
                _scaled(
                    data,
                    model * lora.strength_model,
                    None
                    if te is None and base_te is None
                    else (te if te is not None else model) * (base_te if base_te is not None else lora.strength_model),
                )
            )
        return out

    final = inputs_of(terms)
    steps.sort(key=lambda s: int(s["name"][1:]))
    steps.append({"name": "final", "inputs": final})
    return parse_recipe({"version": RECIPE_VERSION, "options": dict(options or {}), "steps": steps}, "--formula")


def _scaled(data: dict, model: float, te: float | None) -> dict:
    out = {**data, "strength_model": model}
    if te is not None:
        out["strength_text_encoder"] = te
    return out
