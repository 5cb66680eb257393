"""The engine-side probes and the worker extension, without vLLM (host memory for real, devices faked)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from toolkit.worker import probe
from toolkit.worker.extension import MemlabWorkerExtension

MiB = 1 << 20


def test_host_memory_sees_a_real_allocation():
    mem = probe.HostMemory()
    before = mem.memory_stats()
    block = bytearray(64 * MiB)  # malloc'd (mmapped: above the mmap threshold) and touched (zeroed)
    after = mem.memory_stats()
    grew = after["allocated_bytes.all.current"] - before["allocated_bytes.all.current"]
    assert 64 * MiB <= grew < 70 * MiB
    assert after["reserved_bytes.all.current"] - before["reserved_bytes.all.current"] >= 64 * MiB
    assert after["rss_bytes"] - before["rss_bytes"] >= 60 * MiB  # zeroed pages are resident
    del block


def test_host_sample_decomposition_and_peak_reset():
    mem = probe.HostMemory()
    mem.reset_peak()
    block = bytearray(32 * MiB)
    del block  # freed again before the sample: only the RSS high-water mark remembers it
    s = probe.measure_sample(mem, baseline_used_bytes=0)
    assert s["non_torch_bytes"] == s["device_used_bytes"] - s["reserved_bytes"]
    assert s["device_total_bytes"] > s["device_used_bytes"] > 0
    assert s["rss_peak_bytes"] >= s["device_used_bytes"] + 30 * MiB
    again = probe.measure_sample(mem)  # peaks were reset by the previous sample
    assert again["rss_peak_bytes"] < s["rss_peak_bytes"] - 30 * MiB
    assert all(type(v) is int for v in s.values())


class _FakeAllocatorModule:
    """torch.cuda / torch.npu as the probe uses them, with known numbers."""

    def __init__(self, segments):
        self.resets = 0
        self.recorded = []
        outer = self

        class _Memory:
            @staticmethod
            def _snapshot():
                return {"segments": segments, "device_traces": [[{"action": "alloc"}] * 3]}

            @staticmethod
            def _record_memory_history(**kwargs):
                outer.recorded.append(kwargs)

        self.memory = _Memory

    def memory_stats(self, device):
        return {"allocated_bytes.all.current": 100, "allocated_bytes.all.peak": 150,
                "reserved_bytes.all.current": 200, "reserved_bytes.all.peak": 260,
                "active_bytes.all.current": 110, "inactive_split_bytes.all.current": 20,
                "segment.all.current": 3, "num_alloc_retries": 1, "num_ooms": 0, "requested_bytes.all.peak": 99.0}

    def mem_get_info(self, device):
        return 700, 1000

    def reset_peak_memory_stats(self, device):
        self.resets += 1


def _fake_device(segments=()):
    mem = probe.TorchDeviceMemory.__new__(probe.TorchDeviceMemory)
    mem.backend, mem.mod, mem.device = "npu", _FakeAllocatorModule(list(segments)), 0
    return mem


def test_device_sample_follows_vllm_decomposition_with_baseline():
    mem = _fake_device()
    s = probe.measure_sample(mem, baseline_used_bytes=40)
    assert s == {"allocated_bytes": 100, "allocated_peak_bytes": 150, "reserved_bytes": 200,
                 "reserved_peak_bytes": 260, "active_bytes": 110, "inactive_split_bytes": 20, "segment_count": 3,
                 "alloc_retries": 1, "num_ooms": 0, "device_used_bytes": 300, "device_total_bytes": 1000,
                 "non_torch_bytes": 300 - 40 - 200}
    assert mem.mod.resets == 1
    probe.measure_sample(mem, reset_peak=False)
    assert mem.mod.resets == 1


@pytest.mark.parametrize(("flags", "expected"), [
    ([True, True], {"known": True, "expandable": True, "segments": 2, "expandable_segments": 2}),
    ([True, False], {"known": True, "expandable": False, "segments": 2, "expandable_segments": 1}),
    ([None], {"known": False, "reason": "this runtime's snapshot has no is_expandable flag"}),
    ([], {"known": False, "reason": "no segments yet"}),
])
def test_segments_expandable_reads_the_snapshot(flags, expected):
    segments = [{"device": 0, **({} if f is None else {"is_expandable": f})} for f in flags]
    segments.append({"device": 1, "is_expandable": False})  # another device's segment is not ours
    assert probe.segments_expandable(_fake_device(segments)) == expected


def test_recording_is_bounded_and_snapshots_go_to_disk(tmp_path):
    mem = _fake_device([{"device": 0, "is_expandable": True}])
    assert probe.start_recording(mem, max_entries=500) == {"recording": True, "max_entries": 500}
    assert mem.mod.recorded[-1] == {"enabled": "all", "context": "all", "stacks": "python", "max_entries": 500}
    with pytest.raises(probe.ProbeError, match="max_entries must be a positive int"):
        probe.start_recording(mem, max_entries=0)
    probe.stop_recording(mem)
    assert mem.mod.recorded[-1] == {"enabled": None}
    out = probe.dump_snapshot(mem, str(tmp_path), rank=1)
    assert out["segments"] == 1 and out["trace_entries"] == 3 and out["path"].startswith(str(tmp_path))
    with open(out["path"], "rb") as fh:
        assert pickle.load(fh)["segments"] == [{"device": 0, "is_expandable": True}]


def test_host_has_no_snapshot_and_says_why(tmp_path):
    mem = probe.HostMemory()
    assert probe.dump_snapshot(mem, str(tmp_path), 0)["path"] is None
    assert probe.start_recording(mem)["recording"] is False
    assert probe.segments_expandable(mem)["known"] is False
    assert probe.measure_baseline("host")["used_bytes"] == {}


def test_effective_conf_reads_the_worker_environment(monkeypatch):
    monkeypatch.setenv("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    conf = probe.read_effective_conf(probe.HostMemory())
    assert conf["environ"]["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
    assert conf["environ"]["PYTORCH_ALLOC_CONF"] is None and conf["allocator_settings"] is None
    json.dumps(conf)  # plain data only


@pytest.mark.torch
def test_out_of_memory_is_recognised():
    import torch

    assert probe.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert probe.is_out_of_memory(RuntimeError("NPU out of memory. Tried to allocate 1.00 GiB"))
    assert probe.is_out_of_memory(MemoryError())
    with pytest.raises(RuntimeError) as host_oom:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: the host allocator refuses it
    assert probe.is_out_of_memory(host_oom.value)
    assert not probe.is_out_of_memory(RuntimeError("shape mismatch"))


class _Worker(MemlabWorkerExtension):
    """A stand-in for vLLM's worker class, with the extension mixed in as vLLM does."""

    rank = 1

    def __init__(self, error: Exception | None = None):
        self.error = error

    def execute_model(self, scheduler_output):
        if self.error is not None:
            raise self.error
        return f"ran {scheduler_output}"


def test_extension_samples_with_the_rank_and_its_baseline(monkeypatch):
    monkeypatch.setenv("MEMLAB_PROBE_BACKEND", "host")
    w = _Worker()
    hello = w.memlab_hello({"0": 123}, None)
    assert hello["rank"] == 1 and hello["backend"] == "host" and hello["baseline_used_bytes"] == 0  # host: none
    s = w.memlab_sample()
    assert s["rank"] == 1 and s["device_used_bytes"] > 0
    assert w.memlab_effective_conf()["rank"] == 1
    assert set(w.memlab_mem_get_info()) == {"free_bytes", "total_bytes"}
    assert all(name.startswith(("memlab_", "_memlab")) for name in vars(MemlabWorkerExtension)
               if not name.startswith("__"))


def test_failure_watch_writes_the_cause_before_the_engine_dies(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMLAB_PROBE_BACKEND", "host")
    log = tmp_path / "failures.jsonl"
    w = _Worker(RuntimeError("NPU out of memory. Tried to allocate 4.00 GiB"))
    w.memlab_hello(None, str(log))
    with pytest.raises(RuntimeError, match="NPU out of memory"):
        w.execute_model("step")
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert line["oom"] and line["rank"] == 1 and line["where"] == "execute_model"
    ok = _Worker()
    ok.memlab_hello(None, str(log))
    assert ok.execute_model("s") == "ran s"  # the watch is transparent when nothing fails


def test_probe_modules_do_not_import_torch_at_import():
    code = ("import sys, toolkit.worker.probe, toolkit.worker.extension, toolkit.engines.vllm.engine, "
            "toolkit.notebook._llm_session, toolkit.notebook._engine_magics, toolkit.engines.vllm._cpu_env, toolkit._testing.tiny_model; "
            "print(sorted(m for m in ('torch', 'vllm', 'torch_npu', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
