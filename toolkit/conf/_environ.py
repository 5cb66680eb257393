"""Which environment variable a process's allocator really reads, per release (docs/allocator.md §1.1).

Only one variable is parsed (first present wins, never merged); an empty value counts as present and
means "no options". Orders:

=================  ====================================================================================
CUDA 2.6, 2.7      PYTORCH_CUDA_ALLOC_CONF
CUDA 2.8, 2.9      PYTORCH_CUDA_ALLOC_CONF, then (ROCm builds) PYTORCH_HIP_ALLOC_CONF; 2.9's generic c10
                   config also reads PYTORCH_ALLOC_CONF first and warns that the CUDA name is deprecated
CUDA 2.10+         PYTORCH_CUDA_ALLOC_CONF, PYTORCH_HIP_ALLOC_CONF, PYTORCH_ALLOC_CONF (the CUDA hook reads
                   the HIP name on ROCm builds only); no deprecation warning. Checked on torch 2.13.
torch_npu <= 26.1  PYTORCH_NPU_ALLOC_CONF
torch_npu 26.2.0   PYTORCH_NPU_ALLOC_CONF or PYTORCH_ALLOC_CONF; both set is a RuntimeError
=================  ====================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from toolkit.conf.dialects import resolve_dialect
from toolkit.conf._errors import ConfError
from toolkit.conf._model import AllocConf, parse

from toolkit.core.vocab import CONF_VARS, CUDA_VAR, HIP_VAR, NPU_VAR
from toolkit.core.vocab import GENERIC_VAR as ALLOC_VAR

__all__ = ["CONF_VARS", "CUDA_VAR", "HIP_VAR", "NPU_VAR", "ALLOC_VAR", "EffectiveConf", "conf_from_environ", "read_order"]
_BYPASS = {"cuda": ("PYTORCH_NO_CUDA_MEMORY_CACHING", "PYTORCH_NO_HIP_MEMORY_CACHING"),
           "npu": ("PYTORCH_NO_NPU_MEMORY_CACHING",)}


@dataclass(frozen=True)
class EffectiveConf:
    """What the allocator of a process started with ``environ`` would read.

    Attributes:
        variable: the variable it reads (None: none is set, upstream defaults apply).
        text: that variable's value (None when ``variable`` is None).
        conf: the parsed conf (empty when nothing is read).
        ignored: conf variables that are set but not read by this allocator.
        notes: one sentence each: deprecation warnings, ignored variables, bypasses.
    """

    platform: str
    version: str
    variable: str | None
    text: str | None
    conf: AllocConf
    ignored: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def read_order(platform: str, version: str | None = None, *, rocm: bool = False) -> tuple[str, ...]:
    """The variables the device allocator looks at, first-found-wins."""
    d = resolve_dialect(platform, version)
    if d.platform == "npu":
        return (NPU_VAR, ALLOC_VAR) if d.unified else (NPU_VAR,)
    if d.unified:
        return (CUDA_VAR, HIP_VAR, ALLOC_VAR)
    return (CUDA_VAR, HIP_VAR) if rocm and d.at_least("2.8") else (CUDA_VAR,)


def conf_from_environ(
    environ: Mapping[str, str], platform: str = "npu", version: str | None = None, *, rocm: bool = False
) -> EffectiveConf:
    """Resolve the effective conf from an environment mapping (pass ``os.environ`` or a dict; never read implicitly).

    Raises:
        ConfError: the variable that is read holds a conf upstream rejects, or (torch_npu 26.2.0) both
            PYTORCH_NPU_ALLOC_CONF and PYTORCH_ALLOC_CONF are set.
    """
    d = resolve_dialect(platform, version)
    order = read_order(d.platform, d.version, rocm=rocm)
    notes: list[str] = []
    if d.platform == "npu" and d.unified and NPU_VAR in environ and ALLOC_VAR in environ:
        raise ConfError(
            f"both {NPU_VAR} and {ALLOC_VAR} are set", stage="environ", platform=d.platform, version=d.version,
            upstream=f"Both {NPU_VAR} and {ALLOC_VAR} have been set, please set only one of them.",
            upstream_type="RuntimeError",
            suggestion=f"unset one of them (vllm-ascend writes {NPU_VAR})")
    variable = next((name for name in order if name in environ), None)
    if d.platform == "cuda" and d.unified and not rocm and variable == HIP_VAR:
        hook = ALLOC_VAR if ALLOC_VAR in environ else None
        notes.append(f"{HIP_VAR} is read by c10's generic config, but the CUDA-specific keys come from "
                     f"{hook or 'no variable'} on a CUDA (non-ROCm) build")
    if d.platform == "cuda" and d.version == "2.9":
        if variable is not None and ALLOC_VAR not in environ:
            notes.append(f"torch 2.9 warns once: '{variable} is deprecated, use {ALLOC_VAR} instead' (the CUDA "
                         f"allocator still reads {variable})")
        if ALLOC_VAR in environ:
            notes.append(f"in torch 2.9 {ALLOC_VAR} is read by c10's generic config only, probably not by the CUDA "
                         "caching allocator (docs/allocator.md §9, unverified): set PYTORCH_CUDA_ALLOC_CONF too")
    if d.platform == "npu" and d.unified and CUDA_VAR in environ:
        notes.append(f"{CUDA_VAR} is set: torch 2.13's generic allocator config reads it before torch_npu's "
                     "variable; unset it on NPU hosts")
    ignored = tuple(name for name in CONF_VARS if name in environ and name != variable)
    for name in ignored:
        notes.append(f"{name} is set but not read by the {d.platform} allocator of {d.product} {d.version}")
    for name in _BYPASS[d.platform]:
        if environ.get(name, "") not in ("", "0"):
            notes.append(f"{name}={environ[name]} bypasses the caching allocator: the conf has no effect")
    if variable is None:
        notes.append(f"no allocator conf variable is set: {d.product} {d.version} defaults apply")
        return EffectiveConf(d.platform, d.version, None, None, parse("", d.platform, d.version), ignored,
                             tuple(notes))
    text = environ[variable]
    try:
        conf = parse(text, d.platform, d.version)
    except ConfError as err:  # say which variable holds the bad string
        raise ConfError(f"{variable}: {err.summary}", key=err.key, position=err.position,
                        suggestion=err.suggestion, upstream=err.upstream, upstream_type=err.upstream_type,
                        stage=err.stage, platform=err.platform, version=err.version) from None
    if d.platform == "cuda" and "backend" in conf.options:
        notes.append("backend is read when torch is imported: the variable must be set before `import torch`")
    return EffectiveConf(d.platform, d.version, variable, text, conf, ignored, tuple(notes))
