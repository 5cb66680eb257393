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
