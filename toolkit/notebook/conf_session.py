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
from typing import cast

from toolkit import conf as confmod
from toolkit.conf import guard, policy
from toolkit.core.errors import TooLateError, ToolkitError
from toolkit.core.vocab import CONF_VARS as ALL_VARS
from toolkit.core.vocab import PLATFORMS, WRITE_VAR, Platform
from toolkit.viz.tables import ConfStatus, PolicyView

# The variable the toolkit writes per platform, and the competing ones it moves out of the way: with only
# one alloc variable set, every torch / torch_npu version reads the same thing (docs/allocator.md §1.1).
COMPETING = {
    "npu": ("PYTORCH_ALLOC_CONF",),
    "cuda": ("PYTORCH_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF"),
}
_UNSET = object()


@dataclass
class _Target:
    platform: Platform
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
        self._initial = _Target(self._target.platform, version)  # what ``reset_conf`` returns to
        self._saved: dict[str, object] = {}  # variable -> value before this session first touched it

    # -- target -------------------------------------------------------------------------------------
    @staticmethod
    def _check_platform(platform: str) -> Platform:
        if platform not in PLATFORMS:
            raise ToolkitError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}")
        return cast(Platform, platform)  # checked just above

    @property
    def platform(self) -> Platform:
        return self._target.platform

    @property
    def version(self) -> str | None:
        return self._target.version

    def resolve(self, platform: str | None = None, version: str | None = None) -> tuple[Platform, str | None]:
        """The (platform, version) one call uses: the ones given, else the session's defaults.

        A version belongs to its platform: naming another platform without a version means its newest
        release, never the default platform's version (``--platform npu`` after ``--version 2.9`` of CUDA).
        """
        plat = self.platform if platform is None else self._check_platform(platform)
        if version is None:
            return plat, (self.version if plat == self.platform else None)
        confmod.parse("", platform=plat, version=version)  # validates the version name
        return plat, version

    def target(self, platform: str | None = None, version: str | None = None) -> None:
        """Make ``platform`` (and torch / torch_npu ``version``) the session's default for later calls.

        The only sticky setting: every other method takes ``platform``/``version`` for that call only.
        """
        self._target = _Target(*self.resolve(platform, version))

    def defaults_rows(self) -> tuple[tuple[str, str], ...]:
        """What stays in force between calls (shown in ``%alloc_conf``'s table)."""
        from toolkit.conf.dialects import NEWEST

        version = self.version or f"newest ({NEWEST[self.platform]})"
        initial = self._target == self._initial
        how = "" if initial else " (--reset returns to " + self._initial.platform + ")"
        return (("platform", self.platform + how), ("version", version),
                ("change", "--platform/--version apply to one call; add --use to keep them"))

    # -- conf ---------------------------------------------------------------------------------------
    def status(self, notes: tuple[str, ...] = (), *, platform: str | None = None, version: str | None = None
               ) -> ConfStatus:
        """The variables as they are, and the conf a process started now would really run with.

        ``platform``/``version``: look with those for this call only (default: the session's).
        """
        plat, ver = self.resolve(platform, version)
        variables = {v: self.environ.get(v) for v in ALL_VARS}
        try:
            effective = confmod.conf_from_environ(self.environ, platform=plat, version=ver)
            error = None
        except confmod.ConfError as err:
            effective, error = None, str(err)
        after_policy = None
        if plat == "npu":
            after_policy = self.policy(None, version=ver)
        state = guard.inspect_allocators()
        if plat in state.initialized_platforms:
            notes = (*notes, guard.too_late_message(plat, guard.engine_runs_in_process(self.environ)))
        if (plat, ver) != (self.platform, self.version):
            notes = (*notes, f"shown for {plat}" + (f" {ver}" if ver else "") + " in this call only; the session "
                     f"default stays {self.platform} (add --use to change it)")
        return ConfStatus(
            platform=plat,
            version=ver,
            variables=variables,
            effective=effective,
            error=error,
            after_policy=after_policy,
            notes=notes,
            defaults=self.defaults_rows(),
        )

    def check_conf(self, text: str, *, platform: str | None = None, version: str | None = None) -> ConfStatus:
        """Validate ``text`` only (raises ``ConfError``); the environment is not touched."""
        plat, ver = self.resolve(platform, version)
        parsed = confmod.parse(text, platform=plat, version=ver)
        return ConfStatus.for_check(parsed)

    def set_conf(self, text: str, *, platform: str | None = None, version: str | None = None) -> ConfStatus:
        """Validate ``text`` and write it where the allocator of the next engine process will read it.

        ``platform``/``version`` apply to this call only (``target`` changes the defaults). Raises
        ``ConfError`` for an invalid conf and ``TooLateError`` when the engine would run in this process
        but this process's allocator is already initialised (the new conf could not apply).
        """
        plat, ver = self.resolve(platform, version)
        parsed = confmod.parse(text, platform=plat, version=ver)
        in_process = guard.engine_runs_in_process(self.environ)
        if plat in guard.inspect_allocators().initialized_platforms and in_process:
            raise TooLateError(guard.too_late_message(plat, in_process=True))
        notes: list[str] = []
        var = WRITE_VAR[plat]
        self._remember(var)
        self.environ[var] = str(parsed)
        for other in COMPETING[plat]:
            if other in self.environ:
                self._remember(other)
                notes.append(f"unset {other}={self.environ[other]!r} so that only {var} is read")
                del self.environ[other]
        return self.status(tuple(notes), platform=plat, version=ver)

    def reset_conf(self) -> ConfStatus:
        """Put back every variable this session changed, as it was before, and the default platform/version."""
        for var, old in self._saved.items():
            if old is _UNSET:
                self.environ.pop(var, None)
            else:
                self.environ[var] = old  # type: ignore[assignment]
        restored = tuple(sorted(self._saved))
        self._saved.clear()
        notes = [f"restored {', '.join(restored)}"] if restored else ["nothing to reset"]
        if self._target != self._initial:
            notes.append(f"defaults back to {self._initial.platform}"
                         + (f" {self._initial.version}" if self._initial.version else ""))
            self._target = _Target(self._initial.platform, self._initial.version)
        return self.status(tuple(notes))

    def _remember(self, var: str) -> None:
        self._saved.setdefault(var, self.environ.get(var, _UNSET))

    # -- policy -------------------------------------------------------------------------------------
    def policy(
        self, vllm_ascend_version: str | None = None, *, sleep_mode: bool = False, rl_enabled: bool = False,
        version: str | None = None,
    ) -> PolicyView:
        """What vllm-ascend would do to the current environment, and the conf the workers would get.

        ``version``: the torch_npu version (default: the session's when its platform is npu, else newest).
        """
        if version is None and self.platform == "npu":
            version = self.version
        upstream = policy.upstream_policy(
            self.environ, vllm_ascend_version, sleep_mode=sleep_mode, rl_enabled=rl_enabled
        )
        env_after = upstream.environ(self.environ)
        try:
            effective = confmod.conf_from_environ(env_after, platform="npu", version=version)
            error = None
        except confmod.ConfError as err:
            effective, error = None, str(err)
        recommended = policy.recommended_policy(self.environ, sleep_mode=sleep_mode, torch_npu_version=version)
        return PolicyView(upstream=upstream, effective=effective, error=error, recommended=recommended)
