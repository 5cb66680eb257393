"""Requests to a real engine: inputs into vLLM's input form, probe answers and outcomes into results.

One request is ``llm.generate`` then one ``collective_rpc("memlab_sample")``; this module builds what goes in
(prompt, image, the Qwen-VL resize the processor will apply) and what comes out (one ``MemorySample`` per rank,
an out-of-memory told apart from other failures), so ``VllmEngine`` only sequences the calls. Plain data in,
plain data out: nothing here calls vLLM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from toolkit.core.errors import EngineError
from toolkit.core.records import MemorySample, RequestResult
from toolkit.engines.vllm._processes import alive
from toolkit.workload.inputs import load_rgb

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.workload.images import ProcessorSpec


def load_image(image: Any) -> tuple[Any, str | None]:
    """(RGB PIL image, name) from a path or a PIL image."""
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(image), Path(image).name
    if not hasattr(image, "size") or not hasattr(image, "mode"):
        raise EngineError(f"image must be a PIL.Image or a path, got {type(image).__name__}")
    name = getattr(image, "filename", None)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb, (Path(name).name if name else None)


def processor_spec(model: str) -> ProcessorSpec | None:
    """The Qwen-VL resize rule of a local model folder (``preprocessor_config.json``), or None."""
    from toolkit.workload.images import ProcessorSpec

    path = Path(model) / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
        size = cfg.get("size") or {}
        return ProcessorSpec(patch_size=int(cfg["patch_size"]), merge_size=int(cfg["merge_size"]),
                             temporal_patch_size=int(cfg.get("temporal_patch_size", 2)),
                             min_pixels=int(cfg.get("min_pixels") or size["shortest_edge"]),
                             max_pixels=int(cfg.get("max_pixels") or size["longest_edge"]))
    except (KeyError, ValueError, TypeError):
        return None


def _no_image_info() -> dict[str, Any]:
    return dict(input_name=None, image_width_px=None, image_height_px=None, resized_width_px=None,
                resized_height_px=None)


def inputs(prompt: str | Mapping[str, Any] | None, image: Any,
           processor: ProcessorSpec | None) -> tuple[Any, dict[str, Any]]:
    """(vLLM input, what the request records about its image) for a prompt and an optional image."""
    from toolkit.workload.prompt import prompt_for_image

    info = _no_image_info()
    if isinstance(prompt, Mapping):  # vLLM's own input form ({"prompt": ..., "multi_modal_data": ...})
        if image is not None:
            raise EngineError("give the image either in the input dict or as image=, not both")
        request = dict(prompt)
        image = (request.get("multi_modal_data") or {}).get("image")
        if image is not None:
            info["input_name"] = getattr(image, "filename", None) or None
    elif image is not None:
        pil, info["input_name"] = load_image(image)
        request = {"prompt": prompt_for_image(prompt), "multi_modal_data": {"image": pil}}
        image = pil
    else:
        request = {"prompt": prompt if prompt is not None else "Hello"}
    if image is not None and hasattr(image, "size"):
        w, h = image.size
        info.update(image_width_px=w, image_height_px=h)
        if processor is not None:
            from toolkit.workload.images import smart_resize

            try:
                rh, rw = smart_resize(h, w, processor.factor, processor.min_pixels, processor.max_pixels)
                info.update(resized_width_px=rw, resized_height_px=rh)
            except ValueError:
                pass  # the engine will reject it and say why
    return request, info


def new_failures(log: Path, seen: int) -> tuple[list[dict[str, Any]], int]:
    """The failure-log lines the workers wrote since line ``seen``, and the new count of lines seen."""
    if not log.is_file():
        return [], seen
    lines = log.read_text().splitlines()
    return [json.loads(line) for line in lines[seen:] if line.strip()], len(lines)


def classify(exc: BaseException, failures: Sequence[Mapping[str, Any]],
             engine_pids: Sequence[int]) -> tuple[Literal["oom", "error"], str, bool]:
    """(status, message, engine dead?) for an exception from ``llm.generate`` and the workers' new failures."""
    dead = type(exc).__name__ == "EngineDeadError" or (
        bool(engine_pids) and len(alive(engine_pids)) < len(engine_pids))
    oom = [f for f in failures if f.get("oom")]
    if oom:
        f = oom[0]
        return "oom", f"out of memory in rank {f['rank']} ({f['where']}): {f['message']}", dead
    if failures:
        f = failures[0]
        return "error", f"rank {f['rank']} failed in {f['where']}: {f['type']}: {f['message']}", dead
    text = f"{type(exc).__name__}: {exc}".strip()
    status: Literal["oom", "error"] = "oom" if "out of memory" in text.lower() else "error"
    if dead:
        gone = sorted(set(engine_pids) - set(alive(engine_pids)))
        if gone:
            text += f" (engine processes gone: {', '.join(map(str, gone))})"
    return status, text, dead


def samples(index: int, request_id: str, started: int, duration: int, info: Mapping[str, Any],
            rows: Sequence[Mapping[str, Any]], status: str = "ok",
            message: str | None = None) -> tuple[MemorySample, ...]:
    """One ``MemorySample`` per rank from the probes' ``memlab_sample`` answers (sorted by rank)."""
    out = []
    for row in sorted(rows, key=lambda r: r["rank"]):
        mem: dict[str, Any] = {k: int(v) for k, v in row.items() if k.endswith("_bytes") and k != "rss_peak_bytes"}
        out.append(MemorySample(
            request_index=index, request_id=request_id, rank=int(row["rank"]), started_at_ns=started,
            duration_ns=duration, **info, **mem, segment_count=int(row.get("segment_count", 0)),
            alloc_retries=int(row.get("alloc_retries", 0)), num_ooms=int(row.get("num_ooms", 0)),
            status=status, message=message))  # type: ignore[arg-type]
    return tuple(out)


def served(index: int, request_id: str, started: int, duration: int, info: Mapping[str, Any],
           rows: Sequence[Mapping[str, Any]], output: Any, image_token_id: int | None) -> RequestResult:
    """The result of a request vLLM answered (``output``: its ``RequestOutput``)."""
    prompt_ids = list(output.prompt_token_ids or ())
    visual = prompt_ids.count(image_token_id) if image_token_id is not None else 0
    completion = output.outputs[0] if output.outputs else None
    generated = len(completion.token_ids) if completion else 0
    return RequestResult(request_index=index, request_id=request_id, status="ok", message=None,
                         samples=samples(index, request_id, started, duration,
                                         dict(info, visual_tokens=visual, prompt_tokens=len(prompt_ids),
                                              output_tokens=generated), rows),
                         visual_tokens=visual, prompt_tokens=len(prompt_ids), output_tokens=generated,
                         text=completion.text if completion else None, **info)


def failed(index: int, request_id: str, started: int, duration: int, info: Mapping[str, Any],
           rows: Sequence[Mapping[str, Any]], status: Literal["oom", "error"], message: str) -> RequestResult:
    """The result of a request ``llm.generate`` raised for (``rows``: the samples taken after it, if any)."""
    return RequestResult(request_index=index, request_id=request_id, status=status, message=message,
                         samples=samples(index, request_id, started, duration, info, rows, status, message),
                         visual_tokens=0, prompt_tokens=0, output_tokens=0, **info)


def failed_input(index: int, request_id: str, started: int, item: Any, reason: str,
                 rows: Sequence[Mapping[str, Any]]) -> RequestResult:
    """A request whose input could not be read: nothing reached vLLM; ``rows``: every rank's memory."""
    info = dict(_no_image_info(), input_name=Path(item).name if isinstance(item, (str, os.PathLike)) else None)
    samples_ = samples(index, request_id, started, 0, dict(info, visual_tokens=0, prompt_tokens=0, output_tokens=0),
                       rows, "error", reason)
    return RequestResult(request_index=index, request_id=request_id, status="error", message=reason,
                         samples=samples_, visual_tokens=0, prompt_tokens=0, output_tokens=0, **info)
