"""The plain Python API behind the magics: one ``Session`` per kernel (or script).

Everything ``%alloc_conf`` does is a method here, so a script can do the same without IPython::

    from toolkit.notebook.conf_session import Session
    s = Session()
    s.set_conf("expandable_segments:True,page_size:1g")   # validated, written to os.environ
    print(s.status())                                      # what the engine will really run with
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass

from toolkit import conf as confmod
from toolkit.conf import guard, policy
from toolkit.core.errors import TooLateError, ToolkitError
from toolkit.core.vocab import CONF_VARS as ALL_VARS
from toolkit.core.vocab import PLATFORMS, WRITE_VAR
from toolkit.viz.tables import ConfStatus, PolicyView

# The variable the toolkit writes per platform, and the competing ones it moves out of the way: with only
# one alloc variable set, every torch / torch_npu version reads the same thing (allocator-spec §1.1).
COMPETING = {
    "npu": ("PYTORCH_ALLOC_CONF",),
    "cuda": ("PYTORCH_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF"),
}
_UNSET = object()


@dataclass
class _Target:
    platform: str
    version: str | None


class Session:
    """Kernel-side state: the target platform/version and the allocator variables this session changed.

    ``environ`` defaults to ``os.environ`` (the environment engine processes inherit); tests inject a dict.
    Nothing happens at construction: the environment is only touched by ``set_conf``/``reset_conf``.
    """

    def __init__(
        self,
        environ: MutableMapping[str, str] | None = None,
        *,
        platform: str = "npu",
        version: str | None = None,
    ) -> None:
        self.environ: MutableMapping[str, str] = os.environ if environ is None else environ
        self._target = _Target(self._check_platform(platform), version)
        self._saved: dict[str, object] = {}  # variable -> value before this session first touched it

    # -- target -------------------------------------------------------------------------------------
    @staticmethod
    def _check_platform(platform: str) -> str:
        if platform not in PLATFORMS:
            raise ToolkitError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}")
        return platform

    @property
    def platform(self) -> str:
        return self._target.platform

    @property
    def version(self) -> str | None:
        return self._target.version

    def target(self, platform: str | None = None, version: str | None = None) -> None:
        """Change the platform (and torch / torch_npu version) the conf is validated for.

        Both are validated before either changes: a refused call leaves the session as it was.
        """
        plat = self._check_platform(platform) if platform is not None else self.platform
        if version is not None:
            confmod.parse("", platform=plat, version=version)  # validates the version name
        self._target.platform = plat
        if version is not None:
            self._target.version = version

    # -- conf ---------------------------------------------------------------------------------------
    def status(self, notes: tuple[str, ...] = ()) -> ConfStatus:
        """The variables as they are, and the conf a process started now would really run with."""
        variables = {v: self.environ.get(v) for v in ALL_VARS}
        try:
            effective = confmod.conf_from_environ(self.environ, platform=self.platform, version=self.version)
            error = None
        except confmod.ConfError as err:
            effective, error = None, str(err)
        after_policy = None
        if self.platform == "npu":
            after_policy = self.policy(None)
        state = guard.inspect_allocators()
        if self.platform in state.initialized_platforms:
            notes = (*notes, guard.too_late_message(self.platform, guard.engine_runs_in_process(self.environ)))
        return ConfStatus(
            platform=self.platform,
            version=self.version,
            variables=variables,
            effective=effective,
            error=error,
            after_policy=after_policy,
            notes=notes,
        )

    def check_conf(self, text: str, *, platform: str | None = None, version: str | None = None) -> ConfStatus:
        """Validate ``text`` only (raises ``ConfError``); the environment is not touched."""
        plat = self._check_platform(platform or self.platform)
        parsed = confmod.parse(text, platform=plat, version=version or self.version)
        return ConfStatus.for_check(parsed)

    def set_conf(self, text: str, *, platform: str | None = None, version: str | None = None) -> ConfStatus:
        """Validate ``text`` and write it where the allocator of the next engine process will read it.

        Raises ``ConfError`` for an invalid conf and ``TooLateError`` when the engine would run in this
        process but this process's allocator is already initialised (the new conf could not apply).
        """
        plat = self._check_platform(platform or self.platform)
        # validate before anything changes: a refused conf must not switch the platform or version
        parsed = confmod.parse(text, platform=plat, version=version or self.version)
        in_process = guard.engine_runs_in_process(self.environ)
        if plat in guard.inspect_allocators().initialized_platforms and in_process:
            raise TooLateError(guard.too_late_message(plat, in_process=True))
        self.target(platform, version)
        in_process = guard.engine_runs_in_process(self.environ)
        if self.platform in guard.inspect_allocators().initialized_platforms and in_process:
            raise TooLateError(guard.too_late_message(self.platform, in_process=True))
        notes: list[str] = []
        var = WRITE_VAR[self.platform]
        self._remember(var)
        self.environ[var] = str(parsed)
        for other in COMPETING[self.platform]:
            if other in self.environ:
                self._remember(other)
                notes.append(f"unset {other}={self.environ[other]!r} so that only {var} is read")
                del self.environ[other]
        return self.status(tuple(notes))

    def reset_conf(self) -> ConfStatus:
        """Put back every variable this session changed, as it was before."""
        for var, old in self._saved.items():
            if old is _UNSET:
                self.environ.pop(var, None)
            else:
                self.environ[var] = old  # type: ignore[assignment]
        restored = tuple(sorted(self._saved))
        self._saved.clear()
        return self.status((f"restored {', '.join(restored)}",) if restored else ("nothing to reset",))

    def _remember(self, var: str) -> None:
        self._saved.setdefault(var, self.environ.get(var, _UNSET))

    # -- policy -------------------------------------------------------------------------------------
    def policy(
        self, vllm_ascend_version: str | None = None, *, sleep_mode: bool = False, rl_enabled: bool = False
    ) -> PolicyView:
        """What vllm-ascend would do to the current environment, and the conf the workers would get."""
        upstream = policy.upstream_policy(
            self.environ, vllm_ascend_version, sleep_mode=sleep_mode, rl_enabled=rl_enabled
        )
        env_after = upstream.environ(self.environ)
        try:
            effective = confmod.conf_from_environ(env_after, platform="npu", version=self.version)
            error = None
        except confmod.ConfError as err:
            effective, error = None, str(err)
        recommended = policy.recommended_policy(self.environ, sleep_mode=sleep_mode, torch_npu_version=self.version)
        return PolicyView(upstream=upstream, effective=effective, error=error, recommended=recommended)
