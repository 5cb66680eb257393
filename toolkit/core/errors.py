"""The toolkit's error hierarchy. Magics turn these into one-line IPython ``UsageError``s."""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class for errors a user can act on (bad input, wrong order of steps)."""


class TooLateError(ToolkitError):
    """The allocator of the process that would allocate has already read its conf.

    A caching allocator parses its conf once, at its first allocation; setting the variable afterwards
    changes nothing in that process. Raised instead of pretending the new conf applies.
    """


class EngineError(ToolkitError, RuntimeError):
    """An engine (simulated or real) cannot do what was asked: not installed, failed to start, dead, bad input."""


def bounded_repr(value: object, limit: int = 60) -> str:
    """``repr`` of a value that came from an untrusted file, bounded in time and length.

    ``reprlib`` stops at depth 2 and a few items per container, so a shared-list DAG or a 10**6-digit
    int costs a handful of steps (builtin ``repr`` of either may never return); the result is cut at
    ``limit`` characters so an error message stays one short line.
    """
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 2, 4, 4, 4, 4
    r.maxstring, r.maxother, r.maxlong = limit, limit, 24
    try:
        text = r.repr(value)
    except Exception:  # noqa: BLE001 - a hostile object's __repr__; plain data never gets here
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."
