"""Differential test: toolkit.conf's "cuda 2.13" dialect against PyTorch's own parser in the installed
CPU build of torch 2.13 (``torch._C._accelerator_setAllocatorSettings``).

What a CPU-only build can and cannot tell us: it has c10's generic ``AcceleratorAllocatorConfig`` but no
device hook (libc10_cuda is absent), so it

* parses the generic keys exactly as a CUDA build does (max_split_size_mb, max_non_split_rounding_mb,
  garbage_collection_threshold, roundup_power2_divisions, expandable_segments, large_segment_size_mb,
  pinned_use_background_threads, pinned_max_round_threshold_mb, pinned_max_cached_size_mb);
* *skips* every other key (unknown or CUDA-only) with ``skipKey`` instead of rejecting it -- on a CUDA
  build the accelerator stage rejects unknown keys and the CUDA hook validates backend,
  per_process_memory_fraction, pinned_num_register_threads, ... Those rules are modelled from source and
  covered by tests/test_conf.py, not by this test.

So we check (1) the model's accelerator stage *without* a hook against torch exactly: accept/reject,
exception type and upstream message, and the effective values (read from the live
``AcceleratorAllocatorConfig`` singleton in libc10.so, layout self-checked first); and (2) that
``parse(s, "cuda", "2.13")`` agrees with torch wherever torch accepts, and when it is stricter, only
for reasons the CPU build cannot see (the device hook or an unknown key).

torch runs in ONE child process (this file run as a script), which protects pytest from C++ aborts
and keeps torch out of the test process.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

SEED = 20261122
N_STRINGS = 12_000
MiB = 1024 * 1024
SIZE_MAX = 2**64 - 1

# ---------------------------------------------------------------------------------------------------
# The generator (pure; seeded)
# ---------------------------------------------------------------------------------------------------
GENERIC_KEYS = ("max_split_size_mb", "max_non_split_rounding_mb", "garbage_collection_threshold",
                "roundup_power2_divisions", "expandable_segments", "pinned_use_background_threads",
                "large_segment_size_mb", "pinned_max_round_threshold_mb", "pinned_max_cached_size_mb")
OTHER_KEYS = ("backend", "per_process_memory_fraction", "release_lock_on_cudamalloc", "pinned_num_register_threads",
              "pinned_reserve_segment_size_mb", "throw_on_cudamalloc_oom", "page_size", "base_addr_aligned_kb",
              "expandable_segment", "max_split_size_mb=512", "foo", "Expandable_Segments", "segment_size_mb")
INTS = ("0", "10", "11", "19", "20", "21", "30", "64", "512", "4096", "-1", "-0", "+5", "-20", "007",
        str(2**64 - 1), str(2**64), "99999999999999999999999", "512MB", "1e3", "0x10", " 12", "abc", "1.5",
        str(SIZE_MAX // MiB), str(SIZE_MAX // MiB + 1), str(2**63), "2147483648", "", "+", "-")
FLOATS = ("0", "0.0", "0.5", "1", "1.0", "0.999999", "1e-5", "1e-310", "1e-400", "0x1p-1", "0x1p-1074", "nan",
          "inf", "-0.5", "0.5x", ".5", "5.", "1e", "0.5e-1", "abc", "", "1e308", "1e309", "0x.8", "infinity",
          "NaN", "-0", "0x1.0000000000001p-1023", "2.2250738585072011e-308", "0.25junk", "+.75")
BOOLS = ("True", "False", "true", "false", "1", "0", "TRUE", "yes", "", "True1", "Tru", "False,")
DIVS = ("0", "1", "2", "3", "4", "8", "16", "-1", "1024", "abc", "", "2x", str(2**63), "-0")
BOUNDS = (">", "0", "1", "2", "3", "4", "64", "128", "256", "512", "1024", "32768", "65536", str(2**40),
          str(2**63), "-2", "abc", "", ">>", "1g")
GOOD_BOUNDS = ("1", "2", "4", "64", "128", "256", "512", "1024", "32768", "65536", str(2**40))
GOOD_DIVS = ("0", "1", "2", "4", "8", "16")
FUZZ_CHARS = ",:[] \t\n=>;"


def _value(rng: random.Random, key: str) -> str:
    if key in ("garbage_collection_threshold", "per_process_memory_fraction"):
        return rng.choice(FLOATS) if rng.random() < 0.8 else repr(rng.random())
    if key in ("expandable_segments", "pinned_use_background_threads", "release_lock_on_cudamalloc",
               "throw_on_cudamalloc_oom"):
        return rng.choice(BOOLS)
    if key == "roundup_power2_divisions":
        if rng.random() < 0.25:
            return rng.choice(DIVS)
        if rng.random() < 0.5:  # well-formed list, often with '>' (its meaning changed in 2.10)
            items = [f"{rng.choice(GOOD_BOUNDS)}:{rng.choice(GOOD_DIVS)}" for _ in range(rng.randint(0, 4))]
            if rng.random() < 0.7:
                items.insert(rng.randint(0, len(items)), f">:{rng.choice(GOOD_DIVS)}")
            return "[" + ",".join(items) + "]"
        items = [f"{rng.choice(BOUNDS)}{rng.choice((':', ':', ':', ':', '', '=', '::'))}{rng.choice(DIVS)}"
                 for _ in range(rng.randint(0, 5))]
        body = rng.choice((",", ",", ",", ", ", "", ";")).join(items)
        return rng.choice(("[", "[", "[", "[[", "")) + body + rng.choice(("]", "]", "]", "", "]]", ",]"))
    if key == "backend":
        return rng.choice(("native", "cudaMallocAsync", "hipMallocAsync", "", "[native]"))
    return rng.choice(INTS) if rng.random() < 0.85 else str(rng.randint(0, 5000))


def _pair(rng: random.Random) -> str:
    key = rng.choice(GENERIC_KEYS) if rng.random() < 0.85 else rng.choice(OTHER_KEYS)
    sep = rng.choice((":",) * 12 + ("=", "", "::", " : ", ",", ":["))
    return f"{key}{sep}{_value(rng, key)}"


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
        op = rng.randrange(4)
        pos = rng.randint(0, len(text))
        if op == 0:
            text = text[:pos] + rng.choice(FUZZ_CHARS) + text[pos:]
        elif op == 1 and text:
            text = text[:pos] + text[pos + 1:]
        elif op == 2:
            text = text[:pos]
        else:
            # C isspace() only: \x1c and U+00A0 are whitespace to Python's str.isspace, not to torch
            text = text[:pos] + rng.choice((" ", "\t", "\n", "\v", "\f", "\r", "\x1c", "\u00a0")) + text[pos:]
    return text


def generate(n: int = N_STRINGS, seed: int = SEED) -> list[str]:
    """``n`` distinct conf strings, roughly 40% valid: clean pairs, separator and whitespace variants,
    duplicates, lists, truncations and random character edits."""
    rng = random.Random(seed)
    out: dict[str, None] = {"": None, ",": None, "expandable_segments:True,": None}
    while len(out) < n:
        pairs = [_pair(rng) for _ in range(rng.choice((1, 1, 2, 2, 3, 4)))]
        if rng.random() < 0.15:
            pairs.append(pairs[0])  # duplicate key
        joiner = rng.choice((",",) * 10 + (", ", " , ", ";", ":", "", ",,", ",\t"))
        text = joiner.join(pairs)
        if rng.random() < 0.1:
            text += ","
        if rng.random() < 0.05:
            text = "," + text
        if rng.random() < 0.35:
            text = _mutate(rng, text)
        if "\0" not in text:
            out[text] = None
    return list(out)


# ---------------------------------------------------------------------------------------------------
# The torch side: this file run as a script in a child process
# ---------------------------------------------------------------------------------------------------
LAYOUT_PROBE = ("large_segment_size_mb:30,max_split_size_mb:40,max_non_split_rounding_mb:50,"
                "garbage_collection_threshold:0.25,expandable_segments:True,pinned_use_background_threads:True,"
                "pinned_max_round_threshold_mb:5,pinned_max_cached_size_mb:7,roundup_power2_divisions:[2:4,>:8]")


def _oracle_main() -> None:  # pragma: no cover - runs in the child
    import ctypes

    import torch

    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
    # c10::CachingAllocator::AcceleratorAllocatorConfig::instance() and ::roundup_power2_divisions(size_t)
    instance = lib._ZN3c1016CachingAllocator26AcceleratorAllocatorConfig8instanceEv
    instance.restype = ctypes.c_void_p
    divisions_for = lib._ZN3c1016CachingAllocator26AcceleratorAllocatorConfig24roundup_power2_divisionsEm
    divisions_for.restype, divisions_for.argtypes = ctypes.c_size_t, [ctypes.c_size_t]
    base = instance()
    words = ctypes.cast(base, ctypes.POINTER(ctypes.c_uint64))
    # Field offsets from c10/core/AllocatorConfig.h (2.13): 0 large_segment_size_, 8 max_split_size_,
    # 16 max_non_split_rounding_size_, 24 roundup vector (begin, end, cap), 48 gc threshold (double),
    # 56 use_expandable_segments_, 57 pinned_use_background_threads_, 64/72 pinned max round/cached,
    # 80 mutex, 120 last_allocator_settings_ (std::string: data, size).

    def reset() -> None:
        words[0], words[1], words[2] = 20 * MiB, SIZE_MAX, 20 * MiB
        table = ctypes.cast(words[3], ctypes.POINTER(ctypes.c_uint64))
        for j in range(16):
            table[j] = 0
        ctypes.c_double.from_address(base + 48).value = 0.0
        ctypes.c_bool.from_address(base + 56).value = False
        ctypes.c_bool.from_address(base + 57).value = False
        words[8] = words[9] = SIZE_MAX

    def state() -> dict:
        table = ctypes.cast(words[3], ctypes.POINTER(ctypes.c_uint64))
        return {
            "large_segment_size": words[0], "max_split_size": words[1], "max_non_split_rounding_size": words[2],
            "roundup_power2_divisions": [table[j] for j in range(16)],
            "garbage_collection_threshold": ctypes.c_double.from_address(base + 48).value,
            "use_expandable_segments": ctypes.c_bool.from_address(base + 56).value,
            "pinned_use_background_threads": ctypes.c_bool.from_address(base + 57).value,
            "pinned_max_round_threshold": words[8], "pinned_max_cached_size": words[9],
        }

    def layout_ok() -> bool:
        reset()
        torch._C._accelerator_setAllocatorSettings(LAYOUT_PROBE)
        s = state()
        stored = ctypes.string_at(words[15], words[16]).decode()
        expected = {"large_segment_size": 30 * MiB, "max_split_size": 40 * MiB,
                    "max_non_split_rounding_size": 50 * MiB, "garbage_collection_threshold": 0.25,
                    "use_expandable_segments": True, "pinned_use_background_threads": True,
                    "pinned_max_round_threshold": 5 * MiB, "pinned_max_cached_size": 7 * MiB,
                    "roundup_power2_divisions": [4, 4] + [8] * 14}
        exported = [divisions_for(1 << (20 + j)) for j in range(16)]
        good = (words[4] - words[3] == 16 * 8 and s == expected and exported == s["roundup_power2_divisions"]
                and stored == torch._C._accelerator_getAllocatorSettings() == LAYOUT_PROBE)
        reset()
        torch._C._accelerator_setAllocatorSettings("")
        return good and state()["max_split_size"] == SIZE_MAX

    readable = layout_ok()
    print(json.dumps({"torch": torch.__version__, "layout": readable}), flush=True)
    for line in sys.stdin:
        text = json.loads(line)
        if readable:
            reset()
        try:
            torch._C._accelerator_setAllocatorSettings(text)
        except Exception as err:  # noqa: BLE001 - the verdict is the exception
            verdict = {"ok": False, "type": type(err).__name__, "msg": str(err).split("\n")[0]}  # not splitlines(): \x1c is a line break to it
        else:
            verdict = {"ok": True, "state": state() if readable else None}
        print(json.dumps(verdict), flush=True)


def run_oracle(strings: list[str]) -> tuple[dict, list[dict]]:
    """Feed ``strings`` to torch in one child; returns (header, verdicts). Fails clearly on a crash."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("PYTORCH_") and k.endswith("ALLOC_CONF"))}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--oracle"],
                          input="".join(json.dumps(s) + "\n" for s in strings), capture_output=True, text=True,
                          env=env, timeout=300)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) != len(strings) + 1:
        crashed_at = strings[len(lines) - 1] if 0 < len(lines) <= len(strings) else None
        pytest.fail(f"torch oracle exited with {proc.returncode} after {len(lines) - 1} strings "
                    f"(crashing input: {crashed_at!r}); stderr: {proc.stderr[-500:]}")
    return json.loads(lines[0]), [json.loads(x) for x in lines[1:]]


# ---------------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------------
def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _model_accelerator(text: str):
    """The model's accelerator stage without a device hook (what a CPU-only build runs)."""
    from toolkit.conf._tokens import tokenize
    from toolkit.conf._unified import accelerator_pass
    from toolkit.conf._walk import Walk
    from toolkit.conf.dialects import resolve_dialect

    walk = Walk(text, resolve_dialect("cuda", "2.13"), tokenize(text, unified=True))
    return accelerator_pass(walk, torch_version="2.13", hook_keys=None)


def _bytes_or_max(mib: object) -> int:
    return SIZE_MAX if mib is None else int(mib) * MiB  # type: ignore[call-overload]


def _same_state(model, torch_state: dict) -> bool:
    ours = {k: getattr(model, k) for k in torch_state}
    ours["roundup_power2_divisions"] = list(ours["roundup_power2_divisions"])
    a, b = ours.pop("garbage_collection_threshold"), torch_state["garbage_collection_threshold"]
    rest = {k: v for k, v in torch_state.items() if k != "garbage_collection_threshold"}
    return ours == rest and (a == b or (math.isnan(a) and math.isnan(b)))


@pytest.mark.torch
@pytest.mark.skipif(not _torch_available(), reason="torch is not installed (pip install torch==2.13.0+cpu)")
def test_cuda_2_13_matches_torch_parser(record_property) -> None:
    from toolkit.conf import ConfError, parse

    strings = generate()
    header, verdicts = run_oracle(strings)
    assert header["torch"].startswith("2.13"), f"this test models torch 2.13, found {header['torch']}"
    tally = {"compared": 0, "torch_accepts": 0, "torch_rejects": 0, "values_compared": 0,
             "parse_stricter_device_hook": 0, "parse_stricter_unknown_key": 0}
    mismatches: list[str] = []
    for text, verdict in zip(strings, verdicts):
        tally["compared"] += 1
        # (1) the accelerator stage without a hook == torch, exactly
        try:
            state = _model_accelerator(text)
            model_error = None
        except ConfError as err:
            state, model_error = None, err
        if verdict["ok"]:
            tally["torch_accepts"] += 1
            if model_error is not None:
                mismatches.append(f"{text!r}: torch accepts, model says {model_error}")
            elif verdict["state"] is not None:
                tally["values_compared"] += 1
                if not _same_state(state, verdict["state"]):
                    mismatches.append(f"{text!r}: values differ: model {state} torch {verdict['state']}")
        else:
            tally["torch_rejects"] += 1
            if model_error is None:
                mismatches.append(f"{text!r}: torch rejects ({verdict['type']}: {verdict['msg']}), model accepts")
            elif model_error.upstream_type != verdict["type"] or model_error.upstream not in verdict["msg"]:
                mismatches.append(f"{text!r}: torch {verdict['type']}: {verdict['msg']!r}; model "
                                  f"{model_error.upstream_type}: {model_error.upstream!r}")
        # (2) the public cuda 2.13 dialect: never laxer than torch; stricter only where the CPU build is blind
        try:
            conf = parse(text, platform="cuda", version="2.13")
            public_error = None
        except ConfError as err:
            conf, public_error = None, err
        if not verdict["ok"] and public_error is None:
            mismatches.append(f"{text!r}: torch rejects, parse(cuda 2.13) accepts")
        elif verdict["ok"] and public_error is not None:
            if public_error.stage == "device":
                tally["parse_stricter_device_hook"] += 1
            elif public_error.stage == "accelerator" and public_error.upstream.startswith("Unrecognized key"):
                tally["parse_stricter_unknown_key"] += 1
            else:
                mismatches.append(f"{text!r}: torch accepts, parse(cuda 2.13) rejects: {public_error}")
        elif verdict["ok"] and verdict["state"] is not None:
            got = (conf.max_split_size_bytes or SIZE_MAX, conf.max_non_split_rounding_bytes,
                   list(conf.roundup_power2_divisions), conf.expandable_segments, conf.large_segment_size_bytes,
                   conf.garbage_collection_threshold, conf.get("pinned_use_background_threads"),
                   _bytes_or_max(conf.get("pinned_max_round_threshold_mb")),
                   _bytes_or_max(conf.get("pinned_max_cached_size_mb")))
            want = tuple(verdict["state"][k] for k in (
                "max_split_size", "max_non_split_rounding_size", "roundup_power2_divisions",
                "use_expandable_segments", "large_segment_size", "garbage_collection_threshold",
                "pinned_use_background_threads", "pinned_max_round_threshold", "pinned_max_cached_size"))
            if got != want:
                mismatches.append(f"{text!r}: AllocConf properties {got} != torch {want}")
            if str(parse(str(conf), "cuda", "2.13")) != str(conf):
                mismatches.append(f"{text!r}: canonical form {str(conf)!r} does not round-trip")
    for key, value in tally.items():
        record_property(key, value)
    print(f"\nconf differential vs torch {header['torch']} (layout readable: {header['layout']}): {tally}")
    assert not mismatches, f"{len(mismatches)} mismatches, first 10:\n" + "\n".join(mismatches[:10])
    assert tally["compared"] >= 10_000
    assert header["layout"], "could not read AcceleratorAllocatorConfig's fields: only verdicts were compared"
    # the generator must really exercise both outcomes and the blind spots
    assert tally["torch_accepts"] > 2_000 and tally["torch_rejects"] > 2_000, tally
    assert tally["parse_stricter_device_hook"] > 50 and tally["parse_stricter_unknown_key"] > 50, tally


if __name__ == "__main__" and "--oracle" in sys.argv:
    _oracle_main()
