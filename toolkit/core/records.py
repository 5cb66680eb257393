"""The record every path shares: a ``Run`` of ``MemorySample``s, appended to disk as samples arrive.

A real NPU run, a CPU vLLM run, a simulated run and a replay all produce this, so every plot and
comparison works on all of them (docs/design.md, "Data flow"). Pure: stdlib only at import
(pandas is imported inside ``Run.to_frame``).

On disk a run is JSON Lines, written by ``RunWriter``::

    {"kind": "run", "schema_version": 1, "name": ..., "backend": "sim", ...}     header, first line
    {"kind": "sample", "request_index": 0, "rank": 0, "reserved_bytes": ..., ...}  one per request and rank
    {"kind": "end", "status": "oom", "finished_at_ns": ..., "message": ...}       only when the run ended

Each line is written with one ``write``, then flushed and ``fsync``'d, so a process killed at any point
(SIGKILL included) leaves every earlier sample on disk; ``load_run`` tolerates a truncated last line and
reports a run without an end line as ``status="interrupted"``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from toolkit.core.errors import ToolkitError, bounded_repr

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SCHEMA_VERSION = 1

SampleStatus = Literal["ok", "oom", "error"]
RunStatus = Literal["running", "ok", "oom", "error", "interrupted"]
SAMPLE_STATUSES: tuple[str, ...] = ("ok", "oom", "error")
RUN_STATUSES: tuple[str, ...] = ("running", "ok", "oom", "error", "interrupted")


class RecordError(ToolkitError, ValueError):
    """A run file or a record is malformed (says which file, which line and what is wrong)."""


@dataclass(frozen=True, slots=True)
class MemorySample:
    """Device memory of one rank after one request (plain ints; bytes are ``*_bytes``).

    The byte fields follow torch's ``memory_stats()`` and vLLM's decomposition (docs/allocator.md §4, §6):
    ``allocated`` = ``allocated_bytes.all.current``; ``allocated_peak`` = the peak of it *during this
    request* (peak stats are reset before each request); ``reserved`` = ``reserved_bytes.all.current``;
    ``active`` = ``active_bytes.all.current``; ``inactive_split`` = ``inactive_split_bytes.all.current``
    (free pieces of segments that still hold live blocks: the fragmentation that cannot be returned);
    ``device_used`` = total − free from ``mem_get_info``; ``non_torch`` = device_used − reserved (vLLM's
    definition: everything allocated outside the caching allocator).
    """

    request_index: int
    request_id: str
    rank: int
    started_at_ns: int  # wall clock (time.time_ns) when the request started
    duration_ns: int  # wall time the request took (for a simulated run: the simulation's time)
    # input description
    input_name: str | None = None  # e.g. the photo's file name
    image_width_px: int | None = None  # before resizing
    image_height_px: int | None = None
    resized_width_px: int | None = None  # after the processor's smart_resize
    resized_height_px: int | None = None
    visual_tokens: int = 0
    prompt_tokens: int = 0  # whole prompt, visual tokens included
    output_tokens: int = 0
    # memory
    allocated_bytes: int = 0
    allocated_peak_bytes: int = 0
    reserved_bytes: int = 0
    reserved_peak_bytes: int = 0
    active_bytes: int = 0
    inactive_split_bytes: int = 0
    device_used_bytes: int = 0
    device_total_bytes: int = 0
    non_torch_bytes: int = 0
    segment_count: int = 0  # segments as a snapshot lists them (the simulator counts expandable ones too;
    # the real probes read torch's segment.all.current, which stays 0 for expandable segments)
    alloc_retries: int = 0  # cumulative num_alloc_retries
    # bytes the Ascend driver keeps mapped in its devmm heap caches (part of non_torch; 0 where the driver
    # is not modelled or in run files written before this field existed)
    driver_cached_bytes: int = 0
    num_ooms: int = 0  # cumulative num_ooms
    status: SampleStatus = "ok"
    message: str | None = None

    def __post_init__(self) -> None:
        if self.status not in SAMPLE_STATUSES:
            raise RecordError(f"sample status must be one of {SAMPLE_STATUSES}, got {bounded_repr(self.status)}")
        for f in fields(self):
            if f.name.endswith("_bytes"):
                value = getattr(self, f.name)
                if type(value) is not int:  # bool is not a byte count either
                    raise RecordError(f"{f.name} must be an int number of bytes, got {bounded_repr(value)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemorySample:
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:  # a missing required field
            raise RecordError(f"not a MemorySample: {exc}") from None


@dataclass(frozen=True, slots=True)
class Run:
    """One engine run: what ran (backend, platform, conf, model, engine args) and its samples.

    ``conf`` is the allocator conf string as the user gave it (None: not set); ``effective_conf`` is what
    the allocator really got (after e.g. vllm-ascend appended ``expandable_segments:True``).
    ``simulated`` is True for the ``sim`` backend and replays, so every view can say so.
    """

    name: str
    backend: str  # "sim" | "cpu" | "cuda" | "npu" | "replay"
    platform: str  # "npu" | "cuda" | "cpu"
    model: str
    conf: str | None
    effective_conf: str
    device_capacity_bytes: int
    simulated: bool
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    status: RunStatus = "running"
    message: str | None = None
    started_at_ns: int = 0
    finished_at_ns: int | None = None
    schema_version: int = SCHEMA_VERSION
    samples: tuple[MemorySample, ...] = ()
    # the run file this run is (being) written to or was read from; None: kept in memory only. Not
    # written into the file itself (a file that is moved stays right).
    path: str | None = None

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise RecordError(f"run status must be one of {RUN_STATUSES}, got {bounded_repr(self.status)}")
        if type(self.device_capacity_bytes) is not int:
            raise RecordError(f"device_capacity_bytes must be an int, got {bounded_repr(self.device_capacity_bytes)}")

    # -- views ---------------------------------------------------------------------------------------
    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(sorted({s.rank for s in self.samples}))

    @property
    def requests_served(self) -> int:
        """Requests whose samples are all ``ok`` (per request index, over ranks)."""
        bad = {s.request_index for s in self.samples if s.status != "ok"}
        return len({s.request_index for s in self.samples} - bad)

    @property
    def incomplete_requests(self) -> tuple[int, ...]:
        """Request indices with samples for fewer ranks than the run has (a writer cut between ranks).

        The request that ended the run with an error or OOM may carry only the rank that failed.
        """
        ranks = set(self.ranks)
        have: dict[int, set[int]] = {}
        failed: set[int] = set()
        for s in self.samples:
            have.setdefault(s.request_index, set()).add(s.rank)
            if s.status != "ok":
                failed.add(s.request_index)
        last = self.samples[-1].request_index if self.samples else None
        return tuple(i for i, r in have.items() if r != ranks and not (i == last and i in failed))

    def samples_of_rank(self, rank: int) -> tuple[MemorySample, ...]:
        return tuple(s for s in self.samples if s.rank == rank)

    def header_dict(self) -> dict[str, Any]:
        """Everything but the samples, as plain JSON-able data."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("samples", "path")}
        d["engine_args"] = dict(self.engine_args)
        return d

    def to_frame(self) -> pd.DataFrame:
        """One row per (request, rank), one column per ``MemorySample`` field.

        The run's header is in ``frame.attrs["run"]`` (``simulated`` included, for labels).
        """
        import pandas as pd  # deferred: keep ``import toolkit.core.records`` cheap

        columns = [f.name for f in fields(MemorySample)]
        frame = pd.DataFrame([s.to_dict() for s in self.samples], columns=columns)
        frame.attrs["run"] = self.header_dict()
        return frame

    def with_samples(self, samples: Sequence[MemorySample]) -> Run:
        return replace(self, samples=tuple(samples))


# -- writing ----------------------------------------------------------------------------------------


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class RunWriter:
    """Append-only writer of one run file; a context manager.

    ``with RunWriter(path, header) as w: w.append(sample) ...``. Every ``append`` writes whole lines,
    then flushes and fsyncs, so an interrupted run keeps every sample written before. Leaving the block
    writes the end line: the status given to ``finish`` (default ``ok``), ``interrupted`` on
    KeyboardInterrupt, ``error`` (with the exception's message) on any other exception.

    Args:
        path: the ``.jsonl`` file to create (its folder is created; an existing file is an error
            unless ``overwrite``).
        header: the ``Run`` (its samples and status are ignored: the file starts "running").
        fsync: fsync after every append (default True; only a benchmark of the writer turns it off).
    """

    def __init__(self, path: str | os.PathLike[str], header: Run, *, overwrite: bool = False,
                 fsync: bool = True) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise RecordError(f"{self.path} exists: choose a new run path or pass overwrite=True")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = header.started_at_ns or time.time_ns()
        self._header = replace(header, status="running", message=None, started_at_ns=started,
                               finished_at_ns=None, samples=(), path=str(self.path))
        self._samples: list[MemorySample] = []
        self._fsync = fsync
        self._finished: Run | None = None
        self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed in finish)
        self._write_lines([{"kind": "run", **self._header.header_dict()}])

    def _write_lines(self, records: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(_dumps(r) + "\n" for r in records)
        self._fh.write(text)
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def append(self, *samples: MemorySample) -> None:
        """Append samples (e.g. one per rank of the same request) in one durable write."""
        if self._finished is not None:
            raise RecordError(f"{self.path}: run already finished, cannot append")
        for s in samples:
            if not isinstance(s, MemorySample):
                raise RecordError(f"append takes MemorySample objects, got {type(s).__name__}")
        self._write_lines({"kind": "sample", **s.to_dict()} for s in samples)
        self._samples.extend(samples)

    @property
    def run(self) -> Run:
        """The run so far (or as finished)."""
        if self._finished is not None:
            return self._finished
        return self._header.with_samples(self._samples)

    def finish(self, status: RunStatus = "ok", message: str | None = None) -> Run:
        """Write the end line and close the file; returns the finished ``Run``. Idempotent."""
        if self._finished is not None:
            return self._finished
        if status not in RUN_STATUSES or status == "running":
            raise RecordError(f"finish status must be one of {RUN_STATUSES[1:]}, got {status!r}")
        finished_at = time.time_ns()
        try:
            self._write_lines([{"kind": "end", "status": status, "message": message,
                                "finished_at_ns": finished_at}])
        finally:
            self._fh.close()
        self._finished = replace(self._header, status=status, message=message, finished_at_ns=finished_at,
                                 samples=tuple(self._samples))
        return self._finished

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._finished is not None:
            return
        if exc_type is None:
            self.finish("ok")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("interrupted", "interrupted by the user")
        else:
            self.finish("error", f"{exc_type.__name__}: {exc}")


# -- reading ----------------------------------------------------------------------------------------



class MemoryRunWriter:
    """``RunWriter``'s interface without a file, for a run nobody asked to keep on disk."""

    def __init__(self, header: Run) -> None:
        self._header = header
        self._samples: list[MemorySample] = []
        self._run: Run | None = None

    def append(self, *samples: MemorySample) -> None:
        self._samples.extend(samples)

    @property
    def run(self) -> Run:
        return self._run or self._header.with_samples(self._samples)

    def finish(self, status: RunStatus = "ok", message: str | None = None) -> Run:
        if self._run is None:
            self._run = replace(self._header.with_samples(self._samples), status=status, message=message,
                                finished_at_ns=time.time_ns())
        return self._run


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One request on any engine: what went in, the tokens, the text (real engines only), memory per rank."""

    request_index: int
    request_id: str
    status: SampleStatus
    message: str | None
    input_name: str | None
    image_width_px: int | None
    image_height_px: int | None
    resized_width_px: int | None
    resized_height_px: int | None
    visual_tokens: int
    prompt_tokens: int
    output_tokens: int
    samples: tuple[MemorySample, ...]
    text: str | None = None  # None for the simulator, which never produces model text
    simulated: bool = False

    def __repr__(self) -> str:
        from toolkit.core.units import format_bytes

        s = self.samples[0] if self.samples else None
        mem = f", reserved={format_bytes(s.reserved_bytes)}, non_torch={format_bytes(s.non_torch_bytes)}" if s else ""
        label = "[simulated]" if self.simulated else ""
        return (f"RequestResult{label}(#{self.request_index} {self.status}, {self.prompt_tokens} prompt + "
                f"{self.output_tokens} output tokens{mem})")

MAX_RUN_FILE_BYTES = 1 << 30  # 1 GiB: a million samples is ~600 MB; load_run(max_bytes=) raises it
_INT64 = 1 << 63


class RunFileNotFoundError(RecordError, FileNotFoundError):
    """No run file at that path (a ``RecordError`` for the toolkit, a ``FileNotFoundError`` for callers)."""


def _type_table(cls: type) -> dict[str, tuple[type, ...]]:
    """Allowed JSON types per field, from the dataclass annotations (strings under ``from __future__``)."""
    names = {"int": int, "str": str, "bool": bool, "None": type(None), "SampleStatus": str, "RunStatus": str,
             "Mapping[str, Any]": dict}
    return {f.name: tuple(names[t.strip()] for t in str(f.type).split("|")) for f in fields(cls)
            if f.name != "samples"}


_SAMPLE_TYPES = _type_table(MemorySample)
_RUN_TYPES = _type_table(Run)
_END_TYPES = {"status": (str,), "message": (str, type(None)), "finished_at_ns": (int, type(None))}


def _check_types(rec: Mapping[str, Any], table: Mapping[str, tuple[type, ...]], where: str) -> None:
    """Every known field has its declared type: ints are ints (not bools, floats or strings) within int64."""
    for key, allowed in table.items():
        if key not in rec:
            continue
        value = rec[key]
        kind = type(value)
        if kind not in allowed or (kind is int and not -_INT64 <= value < _INT64):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise RecordError(f"{where}: {key} is {bounded_repr(value)}, expected {names}")
    for key in ("request_index", "rank"):
        if type(rec.get(key)) is int and rec[key] < 0:
            raise RecordError(f"{where}: {key} is {rec[key]}, expected a number >= 0")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a run file holds")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _run_from_header(data: Mapping[str, Any], where: str) -> Run:
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or type(version) is not int:
        raise RecordError(f"{where}: schema_version {bounded_repr(version)} is not supported (this toolkit reads "
                          f"{SCHEMA_VERSION}); upgrade ascend-memlab")
    _check_types(data, _RUN_TYPES, f"{where}: run header")
    known = {f.name for f in fields(Run)} - {"samples", "path"}
    try:
        return Run(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise RecordError(f"{where}: not a run header: {exc}") from None


def _read_text(p: Path, max_bytes: int) -> str:
    """The file's text: a regular file only (a FIFO or device never blocks), at most ``max_bytes``."""
    import stat

    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RunFileNotFoundError(f"no run file at {p}") from None
    except OSError as exc:
        raise RecordError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RecordError(f"{p}: not a regular file, not a run file")
        if st.st_size > max_bytes:
            raise RecordError(f"{p}: {st.st_size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB limit "
                              "for run files: pass max_bytes= to load_run to raise it")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise RecordError(f"{p}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise RecordError(f"{p}: over the {max_bytes / 2**20:.0f} MiB limit for run files: pass max_bytes= to "
                          "load_run to raise it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        # a writer killed mid-character leaves invalid UTF-8 only in its unterminated last line
        if b"\n" not in data[exc.start:]:
            return data[: data.rfind(b"\n", 0, exc.start) + 1].decode("utf-8", errors="strict")
        raise RecordError(f"{p}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}): not a run file") from None


def load_run(path: str | os.PathLike[str], *, max_bytes: int = MAX_RUN_FILE_BYTES) -> Run:
    """Read a run file written by ``RunWriter`` (never executes code: plain JSON).

    A truncated last line (the writer was killed mid-write) is dropped; a run without its end line is
    returned with ``status="interrupted"`` and every complete sample. Each record's fields are type
    checked; samples must come in request order after the header, once per (request, rank), and
    nothing may follow the end line. A request with fewer ranks than the run has (a writer killed
    between two ranks' lines, or a run file edited by hand) is kept and named in ``message``
    (``Run.incomplete_requests`` lists them).

    Raises:
        RecordError: not a run file, an unsupported schema version, a corrupt or out-of-order record;
            ``RunFileNotFoundError`` (also a ``FileNotFoundError``) when there is no such file.
    """
    p = Path(path)
    lines = _read_text(p, max_bytes).split("\n")
    # split() leaves "" after a final newline; a non-empty last element is a line cut short
    last_complete = len(lines) - 1
    records: list[tuple[int, dict[str, Any]]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = _DECODER.decode(line)
        except (ValueError, RecursionError) as exc:  # syntax, NaN, a 5000-digit int, deep nesting
            if i >= last_complete:  # the unterminated tail: tolerated
                break
            why = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
            if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError):
                why = "a number out of range"
            raise RecordError(f"{p}:{i + 1}: corrupt line ({why})") from None
        if i >= last_complete:  # parsed, but no newline: the write did not complete; drop it too
            break
        if not isinstance(obj, dict) or "kind" not in obj:
            raise RecordError(f"{p}:{i + 1}: not a run record (no 'kind')")
        records.append((i + 1, obj))
    if not records or records[0][1]["kind"] != "run":
        raise RecordError(f"{p}: not a run file (first line is not a run header)")
    run = replace(_run_from_header(records[0][1], str(p)), path=str(p))
    samples: list[MemorySample] = []
    seen: set[tuple[int, int]] = set()
    end: dict[str, Any] | None = None
    for line_no, rec in records[1:]:
        where = f"{p}:{line_no}"
        kind = rec.pop("kind")
        if end is not None:
            raise RecordError(f"{where}: a {bounded_repr(kind)} record after the end record")
        if kind == "sample":
            _check_types(rec, _SAMPLE_TYPES, where)
            try:
                sample = MemorySample.from_dict(rec)
            except RecordError as exc:
                raise RecordError(f"{where}: {exc}") from None
            key = (sample.request_index, sample.rank)
            if key in seen:
                raise RecordError(f"{where}: a second sample for request {key[0]}, rank {key[1]}")
            if samples and sample.request_index < samples[-1].request_index:
                raise RecordError(f"{where}: request {sample.request_index} comes after request "
                                  f"{samples[-1].request_index}: samples must be in request order")
            seen.add(key)
            samples.append(sample)
        elif kind == "end":
            _check_types(rec, _END_TYPES, where)
            if rec.get("status") not in RUN_STATUSES or rec.get("status") == "running":
                raise RecordError(f"{where}: end status {bounded_repr(rec.get('status'))} is not one of "
                                  f"{RUN_STATUSES[1:]}")
            end = rec
        elif kind == "run":
            raise RecordError(f"{where}: a second run header")
        else:
            raise RecordError(f"{where}: unknown kind {bounded_repr(kind)}")
    if end is None:
        out = replace(run, status="interrupted", message="no end record: the run was interrupted",
                      samples=tuple(samples))
    else:
        out = replace(run, status=end["status"], message=end.get("message"),
                      finished_at_ns=end.get("finished_at_ns"), samples=tuple(samples))
    incomplete = out.incomplete_requests
    if incomplete:
        ranks = list(out.ranks)
        note = (f"incomplete: request{'s' if len(incomplete) > 1 else ''} {', '.join(map(str, incomplete[:5]))}"
                f"{' ...' if len(incomplete) > 5 else ''} lack{'' if len(incomplete) > 1 else 's'} samples of "
                f"some of ranks {ranks}")
        out = replace(out, message=f"{out.message}; {note}" if out.message else note)
    return out
