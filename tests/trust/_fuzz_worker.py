"""The fuzz run of test_fuzz.py, in a process of its own (so that its peak memory is its own, and a
runaway allocation hits an address-space limit instead of the machine).

Usage: python _fuzz_worker.py SEED_FILE WORKDIR MAX_EXAMPLES. Mutates the safetensors file SEED_FILE
(its header as JSON, chosen tensors' values, raw bytes), and for each mutant runs `inspect_file` and
`merge` (with the original as the second LoRA, writing into an output folder). Anything raised but a
LoraMergeError, or a file left in the output folder by a failed merge, fails the run. Prints one
JSON line: examples run, outcomes, peak-memory growth (KiB) over the warmed-up baseline.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
import sys
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from loramerge.api import merge
from loramerge.errors import LoraMergeError
from loramerge.inspection import inspect_file

SEED, WORK, MAX_EXAMPLES = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
RAW = SEED.read_bytes()
N = struct.unpack("<Q", RAW[:8])[0]
HEADER = json.loads(RAW[8 : 8 + N])
DATA = RAW[8 + N :]
KEYS = sorted(k for k in HEADER if k != "__metadata__")
outcomes: Counter[str] = Counter()
grown_kib = 0  # growth of the peak RSS during inspect/merge calls (hypothesis's own memory left out)

# -- mutations ------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
dims = st.integers(-2, 2**40) | st.sampled_from([0, 1, 2, 4, 8, 32, 64, 128])
dtypes = st.sampled_from(["F32", "F16", "BF16", "I16", "I32", "U8", "I8", "BOOL", "F8_E4M3", "F64", "I64", "X9"])


@st.composite
def header_mutation(draw) -> bytes:
    header = json.loads(json.dumps(HEADER))
    key = draw(st.sampled_from(KEYS + ["__metadata__"]))
    what = draw(st.sampled_from(["dtype", "shape", "reshape", "data_offsets", "entry", "drop", "metadata", "dup"]))
    entry = header.get(key)
    if key == "__metadata__" or what == "metadata":
        header["__metadata__"] = draw(json_values | st.dictionaries(st.text(max_size=6), json_values, max_size=3))
    elif what == "dtype":
        entry["dtype"] = draw(dtypes | json_values)
    elif what == "shape":
        entry["shape"] = draw(st.lists(dims, max_size=6) | json_values)
    elif what == "reshape":  # same number of values: passes the header checks, reaches the content checks
        n = 1
        for d in entry["shape"]:
            n *= d
        factors = [f for f in (1, 2, 4, 8, 16, 32) if n % f == 0]
        a = draw(st.sampled_from(factors))
        rest = [n // a] if draw(st.booleans()) else [n // a, 1, 1, 1]
        entry["shape"] = draw(st.permutations([a, *rest]))
    elif what == "data_offsets":
        begin, end = entry["data_offsets"]
        delta = draw(st.integers(-64, 64) | st.integers(-(2**70), 2**70))
        entry["data_offsets"] = draw(
            st.sampled_from([[begin + delta, end], [begin, end + delta], [begin + delta, end + delta], [end, begin]])
            | st.lists(json_values, max_size=3)
        )
    elif what == "entry":
        header[key] = draw(json_values)
    elif what == "drop":
        entry.pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])))
    text = json.dumps(header)  # allow_nan: NaN/Infinity literals appear as Python writes them
    if what == "dup":  # a key written twice: the second copy points at another tensor's bytes
        other = draw(st.sampled_from(KEYS))
        text = text[:-1] + f", {json.dumps(key)}: {json.dumps(HEADER[other])}}}"
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + DATA


@st.composite
def value_mutation(draw) -> bytes:
    """Values written into one tensor's data: NaN, Inf, the float16 limit, huge, zero, negative."""
    key = draw(st.sampled_from(KEYS))
    info = HEADER[key]
    begin, end = info["data_offsets"]
    size = {"F16": 2, "BF16": 2, "F32": 4}[info["dtype"]]
    fmt = {"F16": "<e", "F32": "<f"}.get(info["dtype"], "<e")
    value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 65504.0, -65504.0, 0.0, -1.0, 1e4]))
    data = bytearray(DATA)
    everywhere = draw(st.booleans())
    for at in (
        range(begin, end, size) if everywhere else [begin + size * draw(st.integers(0, (end - begin) // size - 1))]
    ):
        data[at : at + size] = struct.pack(fmt, value)
    return RAW[: 8 + N] + bytes(data)


@st.composite
def byte_mutation(draw) -> bytes:
    raw = bytearray(RAW)
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "length"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(raw) - 1))
            raw[at] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    elif kind == "insert":
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = draw(st.binary(min_size=1, max_size=16))
    else:
        raw[:8] = struct.pack(
            "<Q", draw(st.integers(0, 2**64 - 1) | st.integers(N - 16, N + 16).filter(lambda n: n >= 0))
        )
    return bytes(raw)


# -- the property -------------------------------------------------------------------------------------
def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_one(raw: bytes) -> None:
    global grown_kib
    before = maxrss_kib()
    try:
        _run_one(raw)
    finally:
        grown_kib += maxrss_kib() - before


def _run_one(raw: bytes) -> None:
    path = WORK / "mutant.safetensors"
    path.write_bytes(raw)
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    try:
        inspect_file(path)
        outcomes["inspect ok"] += 1
    except LoraMergeError:
        outcomes["inspect error"] += 1
    try:
        merge([path, SEED], output=out / "merged.safetensors").close()
        outcomes["merge ok"] += 1
        assert [p.name for p in out.iterdir()] == ["merged.safetensors"], list(out.iterdir())
    except LoraMergeError:
        outcomes["merge error"] += 1
        assert list(out.iterdir()) == [], f"a failed merge left {list(out.iterdir())}"


@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing example is printed as drawn
    suppress_health_check=list(HealthCheck),
)
@given(st.one_of(header_mutation(), value_mutation(), byte_mutation()))
def fuzz(raw: bytes) -> None:
    run_one(raw)


if __name__ == "__main__":
    run_one(RAW)  # warm-up: imports, first merge, allocator pools
    run_one(RAW)
    outcomes.clear()
    grown_kib = 0
    vm = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
    limit = vm + (1 << 30)  # a runaway allocation fails here instead of taking the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fuzz()
    print(json.dumps({"outcomes": dict(outcomes), "grown_kib": grown_kib, "file_bytes": len(RAW)}))
