"""The compiled twin (Cython, built from the same .py files) gives exactly what the pure-Python modules give.

``setup.py`` compiles the hot modules (``toolkit/_compiled.py`` lists them); ``MEMLAB_PURE_PYTHON=1`` loads
their .py instead. Each check runs the same streams in two subprocesses, one per mode, and requires identical
digests: memory_stats, the segment layout and snapshot() of the hot-path streams (CUDA and NPU, default and
expandable, with the Ascend driver layer), requests, streams and addresses beyond 64 bits, the replay rows of a synthetic trace and of real recordings
(``$MEMLAB_TRACES``), and the opcode prescan of snapshot pickles (accepted counts and refusal messages).
It also checks that a normal run really loads the compiled modules (so a build that silently fell back to
pure Python fails here) and that a stale build is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from trace_paths import TRACES

REPO = Path(__file__).resolve().parents[1]

DRIVER = r"""
import hashlib, json, pickle, random, sys
sys.path.insert(0, {bench!r})
from bench_replay import run_ops, seeded_device, synthetic_ops, synthetic_snapshot
import toolkit._compiled as compiled
from toolkit.replay import replay, replay_events
from toolkit.sim import SimDevice
from toolkit.snapshot import normalize_snapshot, trace_events
from toolkit.snapshot._prescan import prescan

def digest(*parts):
    return hashlib.sha256(repr(parts).encode()).hexdigest()

def state(dev):
    return sorted(dev.memory_stats().items()), dev.snapshot()

out = {{"kinds": compiled.import_all()}}
ops = synthetic_ops({n_ops}, 1)
for platform, conf in (("cuda", ""), ("cuda", "expandable_segments:True"), ("npu", ""),
                       ("npu", "expandable_segments:True"), ("cuda", "garbage_collection_threshold:0.5,max_split_size_mb:64")):
    dev = SimDevice(platform, conf, capacity_bytes=24 << 30, context_bytes=0)
    dev.record_history()
    try:
        run_ops(dev, ops)
        err = None
    except Exception as exc:  # an OOM on the small device is a result too
        err = repr(exc)
    out[f"hot {{platform}} {{conf}}"] = digest(err, state(dev), dev.driver_heaps() if platform == "npu" else None)
# Extremes: the compiled twin keeps statistics as C long longs; requests, streams and addresses beyond them
# must end exactly as in plain Python (an OOM or a ValueError), never as an OverflowError.
extremes = []
for platform in ("cuda", "npu"):
    for conf in ("", "expandable_segments:True"):
        for nbytes, stream in ((2 ** 60, 0), (2 ** 63, 0), (2 ** 70, 0), (-1, 0), (512, 2 ** 63), (512, 2 ** 64 + 1)):
            dev = SimDevice(platform, conf, capacity_bytes=8 << 30, context_bytes=0)
            try:
                extremes.append(hex(dev.malloc(nbytes, stream)))
            except Exception as exc:
                extremes.append(f"{{type(exc).__name__}}: {{exc}}")
            extremes.append(sorted(dev.memory_stats().items()))
    dev = SimDevice(platform, "", capacity_bytes=8 << 30, context_bytes=0, segment_address=lambda size, stream: 2 ** 64)
    try:
        extremes.append(hex(dev.malloc(4 << 20)))
    except Exception as exc:
        extremes.append(f"{{type(exc).__name__}}: {{exc}}")
out["extremes"] = digest(extremes)
snap, _ = synthetic_snapshot({n_events}, 2)
snap = normalize_snapshot(snap)
events = [tuple(e) for e in trace_events(snap)]
for platform, conf in (("cuda", ""), ("cuda", "expandable_segments:True"), ("npu", "")):
    res = replay_events(seeded_device(snap, platform, conf), events)
    out[f"replay synthetic {{platform}} {{conf}}"] = digest(list(res.rows), res.events_replayed, repr(res.error),
                                                          state(res.device))
for path in {traces!r}:
    data = open(path, "rb").read()
    for conf in (None, "expandable_segments:True"):
        res = replay(data, conf=conf)
        out[f"replay {{path}} {{conf}}"] = digest(list(res.rows), res.events_replayed, repr(res.error),
                                                state(res.device), res.summary())
    cases = [data] + [data[:k] for k in range(0, len(data), max(1, len(data) // 97))]
    rng = random.Random(3)
    for _ in range(200):
        b = bytearray(data)
        b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append(bytes(b))
    results = []
    for case in cases:
        try:
            results.append(prescan(case))
        except Exception as exc:
            results.append(f"{{type(exc).__name__}}: {{exc}}")
    out[f"prescan {{path}}"] = digest(results)
print(json.dumps(out))
"""


def _run(pure: bool, traces: list[str], n_ops: int = 20_000, n_events: int = 20_000) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MEMLAB_PURE_PYTHON", None)
    if pure:
        env["MEMLAB_PURE_PYTHON"] = "1"
    code = DRIVER.format(bench=str(REPO / "benchmarks"), traces=traces, n_ops=n_ops, n_events=n_events)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compiled_state() -> dict[str, object]:
    code = ("import json, toolkit._compiled as c; "
            "print(json.dumps({'kinds': c.import_all(), 'stale': c.stale_modules(), "
            "'built': [m for m in c.COMPILED_MODULES if c.extension_path(m)]}))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MEMLAB_PURE_PYTHON", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _can_build() -> bool:
    try:
        import Cython  # noqa: F401
    except ImportError:
        return False
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


@pytest.fixture(scope="module")
def built() -> dict[str, object]:
    st = _compiled_state()
    if not st["built"]:
        if _can_build():
            pytest.fail("Cython and a C compiler are here but the compiled twin is not built: run `make build` "
                        "(pip install -e . builds it)")
        pytest.skip("COMPILED TWIN NOT BUILT: no Cython or no C compiler on this machine (pure Python only)")
    return st


def test_a_normal_run_loads_the_compiled_modules(built: dict[str, object]) -> None:
    assert built["stale"] == [], f"stale build (run `make build`): {built['stale']}"
    kinds = built["kinds"]
    assert isinstance(kinds, dict) and set(kinds.values()) == {"compiled"}, kinds


def test_pure_python_switch_loads_every_py() -> None:
    code = "import json, toolkit._compiled as c; print(json.dumps(c.import_all()))"
    env = dict(os.environ, PYTHONPATH=str(REPO), MEMLAB_PURE_PYTHON="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    kinds = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(kinds.values()) == {"python"}, kinds
    assert proc.stderr == "", proc.stderr  # no warning when pure Python is asked for


def test_stale_build_is_never_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A manifest that does not match the sources makes every built module stale (all or nothing)."""
    import toolkit._compiled as compiled

    built = [m for m in compiled.COMPILED_MODULES if compiled.extension_path(m)]
    if not built:
        pytest.skip("nothing built")
    manifest = json.loads(compiled.MANIFEST.read_text(encoding="utf-8"))
    manifest[built[0]]["source_sha256"] = "0" * 64
    fake = tmp_path / "manifest.json"
    fake.write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setattr(compiled, "MANIFEST", fake)
    assert compiled.stale_modules() == [built[0]]
    monkeypatch.setattr(compiled, "MANIFEST", tmp_path / "missing.json")
    assert compiled.stale_modules() == built


def test_compiled_and_pure_python_give_identical_results(built: dict[str, object]) -> None:
    traces = []
    if TRACES is not None:
        traces = [str(TRACES / n) for n in ("cuda-transformer-forward-a.pickle", "cuda-expandable-oom-3gpu.pickle")
                  if (TRACES / n).is_file()]
    compiled_run = _run(False, traces)
    pure_run = _run(True, traces)
    assert set(compiled_run.pop("kinds").values()) == {"compiled"}  # type: ignore[union-attr]
    assert set(pure_run.pop("kinds").values()) == {"python"}  # type: ignore[union-attr]
    assert len(compiled_run) >= 8 + 2 * len(traces)
    different = [k for k in compiled_run if compiled_run[k] != pure_run.get(k)]
    assert not different, f"compiled and pure Python differ on: {different}"
    if TRACES is None:
        pytest.skip("REAL TRACE MISSING: compared the synthetic streams only ($MEMLAB_TRACES)")
