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
import stat
import tempfile
import zlib
from pathlib import Path
from typing import Any

from toolkit.core.errors import bounded_repr
from toolkit.snapshot.normalize import denormalize_snapshot, normalize_snapshot
from toolkit.snapshot._prescan import PickleShapeError
from toolkit.snapshot.schema import Platform, Snapshot, SnapshotError
from toolkit.snapshot._unpickler import UnsafePickleError, loads_plain

PICKLE_PROTOCOL = 4  # readable by every Python PyTorch supports, and by memory_viz's loader
_GZIP_MAGIC = b"\x1f\x8b"
MAX_SNAPSHOT_BYTES = 2 << 30  # 2 GiB: a 10**6-event trace with frames is ~50 MB; load_snapshot(max_bytes=) raises it
_GZIP_MAX_RATIO = 50  # real snapshot pickles compress 18-24x; a "gzip bomb" of zeros ~1000x
_GZIP_MIN_CAP = 64 << 20
_WORK_PER_BYTE = 2  # normalisation budget: segments + blocks + entries per 2 bytes (real files: < 1 per 100)


def load_snapshot(
    source: str | os.PathLike[str] | bytes, *, platform: Platform | None = None, normalize: bool = True,
    max_bytes: int = MAX_SNAPSHOT_BYTES,
) -> Snapshot:
    """Load a snapshot file (or its bytes) safely and return it normalised (see ``normalize.py``).

    Args:
        source: path to a ``.pickle``/``.json`` (optionally ``.gz``) file, or the file's bytes.
        platform: "cuda" or "npu" to override detection (affects workspace separation and rounding).
        normalize: False returns the plain data as stored (still validated to look like a snapshot).
        max_bytes: the largest file (and decompressed content) read; bigger ones are refused before
            reading, so a mistaken path (a device, a FIFO, a huge file) cannot exhaust memory.

    Bounded by construction: only regular files are read, at most ``max_bytes``; a pickle's opcodes
    are pre-scanned (``prescan.py``) before the C unpickler runs; normalisation visits at most
    ``len(data) * 2`` segments, blocks and entries; values from the file reach messages only through
    ``bounded_repr``.

    Raises:
        SnapshotError: one line naming the file and the problem: unreadable, not a regular file, too
            large, empty, truncated, not a snapshot, or a pickle that asks for code (nothing from it is
            executed).
    """
    if type(max_bytes) is not int or max_bytes <= 0:
        raise SnapshotError(f"max_bytes must be a positive int, got {bounded_repr(max_bytes)}")
    name, data = _read(source, max_bytes)
    if not data:
        raise SnapshotError(f"{name} is empty: not a memory snapshot")
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(name, data, min(max_bytes, max(_GZIP_MIN_CAP, _GZIP_MAX_RATIO * len(data))))
        if not data:
            raise SnapshotError(f"{name} is empty: not a memory snapshot")
    raw = _parse(name, data)
    try:
        normalized = normalize_snapshot(raw, platform=platform, source=name, trust_marker=False,
                                        budget=_WORK_PER_BYTE * len(data) + 1024)
    except RecursionError:
        raise SnapshotError(f"{name}: nested too deeply to be a memory snapshot") from None
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


def _too_big(name: str, size: int, max_bytes: int, what: str = "") -> SnapshotError:
    return SnapshotError(
        f"{name}{what} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit for snapshots: "
        f"pass max_bytes= to load_snapshot to raise it (e.g. max_bytes={2 * max(size, max_bytes)})")


def _read(source: str | os.PathLike[str] | bytes, max_bytes: int = MAX_SNAPSHOT_BYTES) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > max_bytes:
            raise _too_big("<bytes>", len(source), max_bytes)
        return "<bytes>", bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise SnapshotError(f"expected a path or bytes, got {type(source).__name__}")
    path = Path(source)
    name = bounded_repr(path.name, 80).strip("'\"")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {bounded_repr(str(path), 120)}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
            raise SnapshotError(f"{name} is {kind}, not a snapshot file")
        if st.st_size > max_bytes:
            raise _too_big(name, st.st_size, max_bytes)
        os.set_blocking(fd, True)
        chunks = []
        left = max_bytes + 1  # a file that grows while read is still cut at the limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise _too_big(name, len(data), max_bytes)
        return name, data
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {bounded_repr(str(path), 120)}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _gunzip(name: str, data: bytes, max_bytes: int) -> bytes:
    """Decompress at most ``max_bytes`` (a 1 MB gzip file can expand to 1 GB); concatenated members too.

    ``load_snapshot`` caps it at 50x the compressed size (at least 64 MiB) as well: real snapshot
    pickles compress 18-24x, so only a bomb expands further.
    """
    out: list[bytes] = []
    total = 0
    try:
        while data:
            d = zlib.decompressobj(wbits=31)
            pending = data
            while True:  # 16 MiB at a time: a bomb stops at the cap, never allocating more than that
                chunk = d.decompress(pending, 16 << 20)
                total += len(chunk)
                out.append(chunk)
                if total > max_bytes:
                    raise SnapshotError(
                        f"{name} expands to more than {max_bytes / 2**20:.0f} MiB when decompressed (the limit is "
                        "max_bytes of load_snapshot, and 50x the compressed size): not a snapshot, or pass the "
                        "decompressed file")
                pending = d.unconsumed_tail
                if d.eof or (not pending and not chunk):
                    break
            if not d.eof:
                raise SnapshotError(f"{name} is a truncated or corrupt gzip file (compressed data ended early)")
            data = d.unused_data
            if data[:2] != _GZIP_MAGIC:
                break  # trailing bytes after the last member: gzip ignores them too
    except zlib.error as exc:
        raise SnapshotError(f"{name} is a truncated or corrupt gzip file ({exc})") from None
    return b"".join(out)


def _parse(name: str, data: bytes) -> Any:
    head = data.lstrip()[:1]
    if head in (b"{", b"["):  # JSON; a pickle never starts with these bytes (protocol 2+ starts 0x80)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # bad UTF-8, syntax, a 5000-digit int, deep nesting
            raise SnapshotError(f"{name} is not valid JSON ({bounded_repr(str(exc), 80)})") from None
    try:
        return loads_plain(data)
    except UnsafePickleError as exc:
        raise SnapshotError(f"refused to load {exc} from {name}: snapshots must contain plain data only") from None
    except PickleShapeError as exc:
        raise SnapshotError(f"{name} is not a plain-data pickle: {exc}") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise SnapshotError(f"{name} is truncated or not a pickle ({str(exc)[:80] or type(exc).__name__})") from None
    except Exception as exc:  # REDUCE/BUILD on plain data, bad opcodes, deep nesting: never code execution
        raise SnapshotError(f"{name} is not a plain-data pickle ({type(exc).__name__}: {str(exc)[:80]})") from None
