"""Names for what each simulated block is, as stack frames torch's snapshot viewers understand.

A recorded torch snapshot tells what allocated each block through the Python/C++ stack captured at
allocation (``frames``: a list of ``{"filename", "line", "name"}``; torch/csrc/cuda/memory_snapshot.cpp,
``add_frame_key``), and marks ``record_function`` scopes in ``external_annotations`` (``{"name",
"stage": "START"|"END", "device", "time_us"}``, same file). The simulator has no stack: its workload
program knows instead what each tensor is (``toolkit.workload.program``'s labels, e.g. ``vis.attn_out``,
``kv_cache.3.k``) and which layer it belongs to. This module turns those into one frame per block, so
``torch.cuda._memory_viz`` and the inspector say "vision block 12: attention output" or "KV cache layer
3 (K)". Pure: strings only.
"""

from __future__ import annotations

import re
from typing import Any

FRAME_FILE = "toolkit/workload/program.py (simulated)"

# label suffix -> words (the labels are tensor names in program.py; unknown ones are shown as they are)
_WORDS = {
    "norm1": "pre-attention norm", "qkv": "QKV projection", "qk_contiguous": "q/k made contiguous",
    "qk_rotary": "rotary q/k", "attn_out": "attention output", "context_contiguous": "attention context",
    "proj": "attention projection", "residual1": "residual", "norm2": "pre-MLP norm", "gate_up": "MLP gate/up",
    "act": "MLP activation", "fc1": "MLP fc1", "fc2": "MLP fc2", "residual2": "residual",
    "input_norm": "input norm", "residual": "residual", "q_norm": "q norm", "k_norm": "k norm",
    "q_rope": "rotary q", "k_rope": "rotary k", "o_proj": "attention output projection",
    "post_norm": "post-attention norm", "mlp_out": "MLP output",
}
_KV = re.compile(r"^kv_cache\.(\d+)(?:\.([kv]))?$")


def describe(label: str, scope: str | None = None) -> str:
    """``("vis.attn_out", "vision block 12")`` -> ``"vision block 12: attention output"``;
    ``"kv_cache.3.k"`` -> ``"KV cache layer 3 (K)"``; unknown labels are kept."""
    kv = _KV.match(label)
    if kv:
        return f"KV cache layer {kv.group(1)}" + (f" ({kv.group(2).upper()})" if kv.group(2) else "")
    head, _, tail = label.partition(".")
    words = _WORDS.get(tail, tail or label) if head in ("vis", "lm") else label
    return f"{scope}: {words}" if scope else words


def block_frames(label: str, scope: str | None, program: str) -> list[dict[str, Any]]:
    """The frames of one simulated block, innermost first (torch's order): what it is, then the program."""
    return [{"filename": FRAME_FILE, "line": 0, "name": describe(label, scope)},
            {"filename": FRAME_FILE, "line": 0, "name": program}]
