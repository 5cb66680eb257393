"""Read and write snapshot files without ever executing code from them.

Formats, recognised by content (gzip magic, then JSON vs pickle), so a misnamed file still loads:
``.pickle`` (any protocol 0-5, what ``torch.cuda.memory._dump_snapshot`` and torch_npu write),
``.json``, and gzip-compressed versions of both.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import tempfile
import zlib
from pathlib import Path
from typing import Any

from toolkit.snapshot.normalize import denormalize_snapshot, normalize_snapshot
from toolkit.snapshot.schema import Flavor, Snapshot, SnapshotError
from toolkit.snapshot.unpickler import UnsafePickleError, loads_plain

PICKLE_PROTOCOL = 4  # readable by every Python PyTorch supports, and by memory_viz's loader
_GZIP_MAGIC = b"\x1f\x8b"


def load_snapshot(
    source: str | os.PathLike[str] | bytes, *, flavor: Flavor | None = None, normalize: bool = True
) -> Snapshot:
    """Load a snapshot file (or its bytes) safely and return it normalised (see ``normalize.py``).

    Args:
        source: path to a ``.pickle``/``.json`` (optionally ``.gz``) file, or the file's bytes.
        flavor: "cuda" or "npu" to override detection (affects workspace separation and rounding).
        normalize: False returns the plain data as stored (still validated to look like a snapshot).

    Raises:
        SnapshotError: one line naming the file and the problem: unreadable, empty, truncated, not a
            snapshot, or a pickle that asks for code (nothing from it is executed).
    """
    name, data = _read(source)
    if not data:
        raise SnapshotError(f"{name} is empty: not a memory snapshot")
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SnapshotError(f"{name} is a truncated or corrupt gzip file ({exc})") from None
        if not data:
            raise SnapshotError(f"{name} is empty: not a memory snapshot")
    raw = _parse(name, data)
    normalized = normalize_snapshot(raw, flavor=flavor, source=name, trust_marker=False)
    return normalized if normalize else raw  # raw is validated either way


def write_snapshot(snapshot: Snapshot, path: str | os.PathLike[str]) -> Path:
    """Write ``snapshot`` in torch's own layout: JSON for ``.json``/``.json.gz``, else pickle protocol 4.

    The pickle is plain data (what ``_dump_snapshot`` writes), so PyTorch's memory_viz opens it; a
    ``.gz`` suffix compresses. Written to a temporary file first and renamed, so a reader never sees a
    half-written file. Returns the path.
    """
    path = Path(path)
    data = denormalize_snapshot(normalize_snapshot(snapshot))
    name = path.name.lower()
    compress = name.endswith(".gz")
    if name.removesuffix(".gz").endswith(".json"):
        try:
            payload = json.dumps(data, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise SnapshotError(f"cannot write {path.name} as JSON: {exc}") from None
    else:
        payload = pickle.dumps(data, protocol=PICKLE_PROTOCOL)
    if compress:
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read(source: str | os.PathLike[str] | bytes) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise SnapshotError(f"expected a path or bytes, got {type(source).__name__}")
    path = Path(source)
    try:
        return path.name, path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {str(path)!r}: {exc.strerror or exc}") from None


def _parse(name: str, data: bytes) -> Any:
    head = data.lstrip()[:1]
    if head in (b"{", b"["):  # JSON; a pickle never starts with these bytes (protocol 2+ starts 0x80)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise SnapshotError(f"{name} is not valid JSON ({str(exc)[:80]})") from None
    try:
        return loads_plain(data)
    except UnsafePickleError as exc:
        raise SnapshotError(f"refused to load {exc} from {name}: snapshots must contain plain data only") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise SnapshotError(f"{name} is truncated or not a pickle ({str(exc)[:80] or type(exc).__name__})") from None
    except Exception as exc:  # REDUCE/BUILD on plain data, bad opcodes, deep nesting: never code execution
        raise SnapshotError(f"{name} is not a plain-data pickle ({type(exc).__name__}: {str(exc)[:80]})") from None
