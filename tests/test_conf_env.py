"""Which environment variable wins, per release (toolkit.conf._environ), and a check against torch 2.13."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.conf import ConfError, conf_from_environ, read_order

NPU, ALLOC, CUDA, HIP = "PYTORCH_NPU_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF"


@pytest.mark.parametrize(
    ("platform", "version", "rocm", "order"),
    [("cuda", "2.6", True, (CUDA,)), ("cuda", "2.8", False, (CUDA,)), ("cuda", "2.8", True, (CUDA, HIP)),
     ("cuda", "2.9", True, (CUDA, HIP)), ("cuda", "2.10", False, (CUDA, HIP, ALLOC)), ("cuda", "2.13", False, (CUDA, HIP, ALLOC)),
     ("npu", "7.2.0", False, (NPU,)), ("npu", "26.1.0", False, (NPU,)), ("npu", "26.2.0", False, (NPU, ALLOC))],
)
def test_read_order(platform: str, version: str, rocm: bool, order: tuple[str, ...]) -> None:
    assert read_order(platform, version, rocm=rocm) == order


def test_first_found_wins_and_empty_counts_as_present() -> None:
    eff = conf_from_environ({ALLOC: "expandable_segments:True", CUDA: ""}, "cuda", "2.13")
    assert (eff.variable, eff.text, str(eff.conf)) == (CUDA, "", "")
    assert eff.ignored == (ALLOC,) and any(f"{ALLOC} is set but not read" in n for n in eff.notes)
    eff = conf_from_environ({ALLOC: "expandable_segments:True"}, "cuda", "2.13")
    assert eff.variable == ALLOC and eff.conf.expandable_segments


def test_nothing_set_means_defaults() -> None:
    eff = conf_from_environ({}, "npu")
    assert eff.variable is None and eff.text is None and str(eff.conf) == "" and "defaults apply" in eff.notes[-1]


def test_reversed_priority_between_2_9_and_2_10() -> None:
    env = {ALLOC: "expandable_segments:True", CUDA: "max_split_size_mb:512"}
    old = conf_from_environ(env, "cuda", "2.9")
    assert old.variable == CUDA and any("PYTORCH_ALLOC_CONF is read by c10's generic config only" in n for n in old.notes)
    assert conf_from_environ(env, "cuda", "2.10").variable == CUDA
    only_new = conf_from_environ({ALLOC: "expandable_segments:True"}, "cuda", "2.9")
    assert only_new.variable is None and not only_new.conf.expandable_segments


def test_2_9_deprecation_warning_note() -> None:
    eff = conf_from_environ({CUDA: "expandable_segments:True"}, "cuda", "2.9")
    assert any(f"'{CUDA} is deprecated, use {ALLOC} instead'" in n for n in eff.notes)
    assert not any("deprecated" in n for n in conf_from_environ({CUDA: ""}, "cuda", "2.10").notes)


def test_hip_variable_on_a_cuda_build() -> None:
    eff = conf_from_environ({HIP: "expandable_segments:True", ALLOC: ""}, "cuda", "2.11")
    assert eff.variable == HIP and any("CUDA-specific keys come from PYTORCH_ALLOC_CONF" in n for n in eff.notes)
    assert not any("CUDA-specific" in n for n in conf_from_environ({HIP: ""}, "cuda", "2.11", rocm=True).notes)
    assert conf_from_environ({HIP: "x:1"}, "cuda", "2.8").variable is None  # only ROCm builds read it
    assert conf_from_environ({HIP: "expandable_segments:True"}, "cuda", "2.8", rocm=True).conf.expandable_segments


def test_npu_legacy_reads_only_its_own_variable() -> None:
    eff = conf_from_environ({ALLOC: "expandable_segments:True"}, "npu", "26.1.0")
    assert eff.variable is None and eff.ignored == (ALLOC,)


def test_npu_master_reads_alloc_conf_but_not_both() -> None:
    assert conf_from_environ({ALLOC: "expandable_segments:True"}, "npu", "26.2.0").conf.expandable_segments
    with pytest.raises(ConfError) as info:
        conf_from_environ({NPU: "expandable_segments:True", ALLOC: ""}, "npu", "26.2.0")
    e = info.value
    assert e.stage == "environ" and e.upstream_type == "RuntimeError"
    assert e.upstream == f"Both {NPU} and {ALLOC} have been set, please set only one of them."
    assert "unset one of them" in str(e)
    # legacy releases simply ignore PYTORCH_ALLOC_CONF
    assert conf_from_environ({NPU: "expandable_segments:True", ALLOC: ""}, "npu", "26.1.0").variable == NPU


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfError) as info:
        conf_from_environ({NPU: "expandable_segments:true"}, "npu", "7.3.0")
    assert str(info.value).startswith(f"{NPU}: expandable_segments:true at 20")
    assert info.value.suggestion == "write True, not true"


def test_bypass_and_backend_notes() -> None:
    eff = conf_from_environ({CUDA: "backend:cudaMallocAsync", "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}, "cuda", "2.13")
    assert any("bypasses the caching allocator" in n for n in eff.notes)
    assert any("before `import torch`" in n for n in eff.notes)
    assert any(CUDA in n for n in conf_from_environ({CUDA: ""}, "npu", "26.2.0").notes)


def test_never_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NPU, "expandable_segments:True")
    env = {"OTHER": "1"}
    eff = conf_from_environ(env, "npu", "7.2.0")
    assert eff.variable is None and env == {"OTHER": "1"}


# ---------------------------------------------------------------------------------------------------
# torch 2.13 itself: one child imports torch once, then forks per environment (the c10 config singleton
# reads the environment on first use, so every fork sees its own variables).
# ---------------------------------------------------------------------------------------------------
def _oracle_main() -> None:  # pragma: no cover - runs in the child
    import torch

    for line in sys.stdin:
        env = json.loads(line)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            for name in (NPU, ALLOC, CUDA, HIP):
                os.environ.pop(name, None)
            os.environ.update(env)
            os.write(write, json.dumps(torch._C._accelerator_getAllocatorSettings()).encode())
            os._exit(0)
        os.close(write)
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        os.close(read)
        os.waitpid(pid, 0)
        print(b"".join(chunks).decode(), flush=True)


ENVIRONMENTS = [{ALLOC: "expandable_segments:True", CUDA: "max_split_size_mb:512"},
                {ALLOC: "expandable_segments:True", HIP: "max_split_size_mb:64"},
                {HIP: "max_split_size_mb:64", CUDA: "max_split_size_mb:512"},
                {CUDA: "", ALLOC: "expandable_segments:True"},
                {ALLOC: "garbage_collection_threshold:0.5"}, {}]


@pytest.mark.torch
@pytest.mark.skipif(__import__("importlib.util").util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_2_13_reads_the_variable_we_predict() -> None:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--oracle"],
                          input="".join(json.dumps(e) + "\n" for e in ENVIRONMENTS), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    seen = [json.loads(line) for line in proc.stdout.splitlines()]
    predicted = [conf_from_environ(env, "cuda", "2.13").text or "" for env in ENVIRONMENTS]
    assert seen == predicted


if __name__ == "__main__" and "--oracle" in sys.argv:
    _oracle_main()
