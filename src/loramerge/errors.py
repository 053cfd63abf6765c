"""Exception hierarchy. Every message says what went wrong, where (file, key) and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence


class LoraMergeError(Exception):
    """Base class of every error loramerge raises on purpose."""


class InputFileError(LoraMergeError):
    """A file cannot be read as a LoRA: names the file, the key if any, and a remedy."""

    def __init__(self, path: object, problem: str, *, key: str | None = None, hint: str | None = None):
        self.path = str(path)
        self.key = key
        self.problem = problem
        self.hint = hint
        where = f"{self.path}" + (f", key '{key}'" if key else "")
        msg = f"{where}: {problem}"
        if hint:
            msg += f"\n  -> {hint}"
        super().__init__(msg)


class InputSyntaxError(LoraMergeError, ValueError):
    """An input argument (``PATH[:MODEL[,TE]][@BLOCKS]``) that cannot be read: names it and what is wrong."""

    def __init__(self, spec: str, problem: str, *, syntax: str):
        self.spec = spec
        self.problem = problem
        super().__init__(f"input '{spec}': {problem}\n  -> accepted: {syntax}")


class PickleRefusedError(InputFileError):
    """A pickle checkpoint was given without explicitly allowing it to be loaded."""


class UnplacedKeysError(LoraMergeError):
    """Strict mode: some keys could not be placed in the canonical key space."""

    def __init__(self, path: object, keys: Sequence[str], architecture: str):
        self.path = str(path)
        self.keys = list(keys)
        shown = "\n    ".join(self.keys[:20])
        more = f"\n    ... and {len(self.keys) - 20} more" if len(self.keys) > 20 else ""
        super().__init__(
            f"{self.path}: {len(self.keys)} key(s) do not fit architecture '{architecture}':\n    {shown}{more}\n"
            "  -> check --arch, or pass --lenient to continue without them (they are listed in the report)."
        )


class BaseModelMismatchError(LoraMergeError):
    """Targets missing from, or shaped differently than, the given base model."""


class OutputError(LoraMergeError):
    """The output cannot be written as asked (format cannot hold the content, bad path, ...)."""


class UnknownNameError(LoraMergeError, ValueError):
    """An unknown architecture, preset or similar name; the message lists the known ones."""


class MissingExtraError(LoraMergeError):
    """A feature needs an optional dependency that is not installed; the message names the extra."""


class EvaluatorError(LoraMergeError):
    """An AutoTuner evaluator could not score a candidate: names the evaluator, the candidate and a fix."""

    def __init__(self, problem: str, *, hint: str | None = None):
        super().__init__(problem + (f"\n  -> {hint}" if hint else ""))


class OptionError(LoraMergeError, ValueError):
    """An option or argument that cannot work (bad pattern, unknown device, wrong input count): names
    the option, what is wrong and the fix. A ValueError too, so that pydantic validators report it."""
