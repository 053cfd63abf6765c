"""The recipe file: a versioned tree of merge steps, validated with pydantic (docs/RECIPES.md).

Each step merges files and/or the results of earlier steps with its own options; the recipe's
``options`` apply to every step, a step's own keys override them. Torch-free.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import LoraInput, MergeConfig
from ..errors import LoraMergeError

RECIPE_VERSION = 1
STEP_FIELDS = {"name", "inputs", "options", "save"}


class RecipeError(LoraMergeError):
    """A recipe that cannot run: names the recipe, the step and what is wrong."""


class StepInput(BaseModel):
    """One input of a step: a file (``path``) or the result of an earlier step (``step``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str | None = None
    step: str | None = None
    strength_model: float = 1.0
    strength_text_encoder: float | None = None
    block_weights: str | None = None
    preserve: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    name: str | None = None
    sha256: str | None = None  # of the file when the recipe was recorded; checked before running

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.step is None):
            raise ValueError("give exactly one of 'path' (a file) or 'step' (an earlier step)")
        if self.block_weights is not None:
            LoraInput(path="x", block_weights=self.block_weights)  # the same syntax check
        return self

    def lora(self, path: str, name: str | None = None) -> LoraInput:
        """The `LoraInput` of this input, reading `path` (a resolved file, or a step's stand-in)."""
        fields = self.model_dump(exclude={"path", "step", "sha256", "name"})
        return LoraInput(path=path, name=self.name or name, **fields)


class Step(BaseModel):
    """One merge. Keys other than name/inputs/options/save are options (``mode: ties``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][\w.-]*$")
    inputs: tuple[StepInput, ...] = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    save: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flat_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            extra = {k: v for k, v in data.items() if k not in STEP_FIELDS}
            if extra:
                data = {k: v for k, v in data.items() if k in STEP_FIELDS}
                data["options"] = {**data.get("options", {}), **extra}
        return data

    @property
    def steps_used(self) -> list[str]:
        return [i.step for i in self.inputs if i.step is not None]


class Recipe(BaseModel):
    """A tree (a DAG) of steps; ``output`` names the step whose result is the output (default: the last)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    options: dict[str, Any] = Field(default_factory=dict)
    steps: tuple[Step, ...] = Field(min_length=1)
    output: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_input_strings(cls, data: Any) -> Any:
        """``"a.safetensors:0.8@OUTALL"`` and ``"styles:0.6"`` (a step's name) as structured inputs."""
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            return data
        names = {s.get("name") for s in data["steps"] if isinstance(s, dict)}
        steps = []
        for s in data["steps"]:
            if isinstance(s, dict) and isinstance(s.get("inputs"), list):
                s = {**s, "inputs": [_structured(x, names, s.get("name")) for x in s["inputs"]]}
            steps.append(s)
        return {**data, "steps": steps}

    @property
    def final(self) -> str:
        return self.output or self.steps[-1].name

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def order(self, *, saves: bool = True) -> list[Step]:
        """The steps the output needs (and, with `saves`, those that save a file), each after the
        steps it uses; RecipeError naming a step of a cycle."""
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in done:
                return
            step = self.step(name)
            for used in step.steps_used:
                if used in path or used == name:
                    loop = path[path.index(used) :] if used in path else ()
                    cycle = " -> ".join((*loop, name, used))
                    raise RecipeError(f"step '{name}': the steps form a cycle ({cycle})")
                visit(used, (*path, name))
            done.append(name)

        for s in self.steps:
            if s.name == self.final or (saves and s.save):
                visit(s.name, ())
        needed, done = set(done), []
        for s in self.steps:  # again in the order written: each step as early as it can be
            if s.name in needed:
                visit(s.name, ())
        return [self.step(n) for n in done]

    def check(self) -> Recipe:
        """Names unique and known, no cycle, every step's options valid; RecipeError naming the step."""
        seen: set[str] = set()
        for s in self.steps:
            if s.name in seen:
                raise RecipeError(f"step '{s.name}': two steps have this name")
            seen.add(s.name)
        if self.final not in seen:
            raise RecipeError(f"output '{self.final}' is not a step (steps: {', '.join(seen)})")
        for s in self.steps:
            for used in s.steps_used:
                if used not in seen:
                    raise RecipeError(f"step '{s.name}': input step '{used}' is not defined")
            options = self.step_options(s)
            try:
                MergeConfig(inputs=(LoraInput(path="x"),), **options)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise RecipeError(f"step '{s.name}': invalid options: {problems}") from None
            except LoraMergeError as exc:  # e.g. an unknown strategy name, with the known ones
                raise RecipeError(f"step '{s.name}': invalid options: {exc}") from None
        self.order()
        return self

    def step_options(self, step: Step) -> dict[str, Any]:
        return {**self.options, **step.options}


def _structured(x: Any, steps: set, where: Any) -> Any:
    if not isinstance(x, str):
        return x
    try:
        lora = LoraInput.parse(x)
    except LoraMergeError as exc:
        raise RecipeError(f"step '{where}': {exc}") from None
    data = lora.model_dump(exclude_defaults=True, exclude={"path"})
    return {"step": lora.path, **data} if lora.path in steps else {"path": lora.path, **data}


def parse_recipe(data: Any, where: str) -> Recipe:
    """A checked `Recipe` from parsed YAML/JSON; RecipeError naming `where` and the step otherwise."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{where}: not a valid recipe:\n  {_explain(exc, data)}") from None
    except RecipeError as exc:  # an input string that does not parse
        raise RecipeError(f"{where}: {exc}") from None
    try:
        return recipe.check()
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def _explain(exc: ValidationError, data: Any) -> str:
    lines = []
    for e in exc.errors():
        loc = list(e["loc"])
        where = ".".join(map(str, loc))
        if len(loc) > 1 and loc[0] == "steps" and isinstance(loc[1], int):
            try:
                where = f"step '{data['steps'][loc[1]]['name']}': " + ".".join(map(str, loc[2:]))
            except (KeyError, IndexError, TypeError):
                pass
        lines.append(f"{where}: {e['msg']}")
    return "\n  ".join(lines + [f"(schema version {RECIPE_VERSION}; see docs/RECIPES.md)"])
