"""What vllm-ascend does to ``PYTORCH_NPU_ALLOC_CONF`` before its engine processes start, and what it should do.

Upstream (vllm-ascend PR #5855, first tag v0.14.0rc1; ``vllm_ascend/platform.py::_set_pytorch_npu_alloc_env``,
read at commit 182b75ea84ff13ece27b57391331ef8935410aea) runs in the process that builds the vLLM config -- the
notebook kernel for ``LLM(...)`` -- so EngineCore and the workers inherit the result::

    if model_config and not model_config.enable_sleep_mode:
        conf = os.getenv("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True")
        if "expandable_segments" not in conf and "max_split_size_mb" not in conf \
                and "garbage_collection_threshold" not in conf:
            conf += ",expandable_segments:True"
        os.environ["PYTORCH_NPU_ALLOC_CONF"] = conf

and, with ``additional_config.rl_config.enabled``, ``_disable_expandable_segments()`` first drops every
comma-separated item that starts with ``expandable_segments:``. :func:`upstream_policy` reproduces this
exactly, quirks included, and names each quirk it hits. :func:`recommended_policy` is the token-based
version the toolkit itself applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from toolkit.core.errors import ToolkitError

from toolkit.core.vocab import GENERIC_VAR, NPU_VAR

DEFAULT_FROM = Version("0.14.0rc1")  # first tag with PR #5855; releases/v0.13.0 does not have it
# The releases this model knows. vllm-ascend docs/source/community/versioning_policy.md: "v0.7.3rc1 will be
# the first pre-release of vLLM Ascend"; the newest line whose vllm_ascend/platform.py
# (_set_pytorch_npu_alloc_env) this model was checked against is releases/v0.26.0rc. Anything outside is a typo
# (0.99, 1.4) or a release whose rewrite nobody has read yet: refuse it rather than guess.
OLDEST_KNOWN = Version("0.7.3rc1")
NEWEST_KNOWN_LINE = (0, 26)
EXPANDABLE = "expandable_segments:True"
# The NPU allocator refuses expandable segments together with these keys (docs/allocator.md §1.6).
_EXCLUSIVE = ("max_split_size_mb", "garbage_collection_threshold")


@dataclass(frozen=True, slots=True)
class Quirk:
    """A place where the upstream policy does something a user would not expect."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """The allocator variables before and after a policy, and why they changed."""

    policy: str  # "vllm-ascend <version>" or "toolkit (token-based)"
    before: dict[str, str]
    after: dict[str, str]
    quirks: tuple[Quirk, ...] = ()
    log: tuple[str, ...] = ()  # what vllm-ascend itself would log
    notes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with the allocator variables replaced by the policy's result."""
        env = {k: v for k, v in base.items() if k not in (NPU_VAR, GENERIC_VAR)}
        env.update(self.after)
        return env


def parse_vllm_ascend_version(text: str | None) -> Version | None:
    """``"v0.14.0rc1"`` -> Version; ``None``/``"main"``/``"latest"`` -> None (newest behaviour)."""
    if text is None or text.strip().lower() in ("", "main", "latest"):
        return None
    try:
        ver = Version(text.strip().lstrip("vV"))
    except InvalidVersion:
        raise ToolkitError(
            f"unknown vllm-ascend version {text!r}: write it like 0.14.0rc1, v0.18.0 or main"
        ) from None
    if ver < OLDEST_KNOWN or ver.release[:2] > NEWEST_KNOWN_LINE:
        newest = ".".join(map(str, NEWEST_KNOWN_LINE))
        raise ToolkitError(f"unknown vllm-ascend version {text!r}: known releases are {OLDEST_KNOWN} to "
                           f"{newest}.x (or main for the newest behaviour)")
    return ver


def _alloc_vars(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: environ[k] for k in (NPU_VAR, GENERIC_VAR) if k in environ}


def _rl_strip(conf: str) -> str:
    """``_disable_expandable_segments``: drop items starting with ``expandable_segments:`` (after strip)."""
    items = [c.strip() for c in conf.split(",")]
    return ",".join(c for c in items if c and not c.startswith("expandable_segments:"))


def upstream_policy(
    environ: Mapping[str, str],
    version: str | None = None,
    *,
    sleep_mode: bool = False,
    rl_enabled: bool = False,
) -> PolicyResult:
    """Reproduce vllm-ascend's environment rewrite exactly, and flag the quirks it hits.

    Example: ``upstream_policy({"PYTORCH_NPU_ALLOC_CONF": "page_size:1g"}, "0.14.0rc1").after`` is
    ``{"PYTORCH_NPU_ALLOC_CONF": "page_size:1g,expandable_segments:True"}``.
    """
    ver = parse_vllm_ascend_version(version)
    label = f"vllm-ascend {version or 'main'}"
    before = _alloc_vars(environ)
    after = dict(before)
    quirks: list[Quirk] = []
    log: list[str] = []

    if ver is not None and ver < DEFAULT_FROM:
        quirks.append(Quirk("no-default", f"vllm-ascend {version} predates the expandable_segments default "
                            "(added in v0.14.0rc1): the allocator runs with whatever you set, or the "
                            "non-expandable default."))
        return PolicyResult(label, before, after, tuple(quirks))

    if rl_enabled and after.get(NPU_VAR):
        stripped = _rl_strip(after[NPU_VAR])
        if stripped != after[NPU_VAR]:
            after[NPU_VAR] = stripped
            log.append(f"Removed expandable_segments from {NPU_VAR}: {stripped}")
            quirks.append(Quirk("rl-strip", "rl_config removed every expandable_segments item, including one "
                                "you set explicitly."))
        if not sleep_mode:
            quirks.append(Quirk("rl-without-sleep", "rl_config is on but sleep mode is off: the default below "
                                "appends expandable_segments:True again right after it was removed."))

    if sleep_mode:
        conf = after.get(NPU_VAR, "")
        quirks.append(Quirk("sleep-mode", "sleep mode is on: vllm-ascend leaves the variable alone, so "
                            "expandable segments stay off unless you set them."))
        if "expandable_segments:True" in conf:
            quirks.append(Quirk("sleep-expandable", "sleep mode with expandable_segments:True: CaMemAllocator "
                                "asserts 'Expandable segments are not compatible with memory pool' "
                                "(pytorch#147851)."))
        return PolicyResult(label, before, after, tuple(quirks), tuple(log))

    conf = after.get(NPU_VAR, "expandable_segments:True")
    if NPU_VAR not in after and GENERIC_VAR in after:
        quirks.append(Quirk("generic-var-ignored", f"only {GENERIC_VAR} is set: vllm-ascend reads "
                            f"{NPU_VAR} alone and writes {NPU_VAR}={conf}. torch_npu reads {NPU_VAR} first "
                            f"(legacy builds read nothing else); torch_npu master raises 'Both "
                            f"{NPU_VAR} and {GENERIC_VAR} have been set'."))
    if NPU_VAR in after and after[NPU_VAR] == "":
        quirks.append(Quirk("leading-comma", f"{NPU_VAR} is set but empty: vllm-ascend appends to it and "
                            "produces ',expandable_segments:True' with a leading comma."))
    blocked = [k for k in ("expandable_segments", *_EXCLUSIVE) if k in conf]
    if not blocked:
        conf += ",expandable_segments:True"
    else:
        tokens = {item.split(":", 1)[0].strip() for item in conf.split(",")}
        false_hits = [k for k in blocked if k not in tokens]
        if false_hits:
            quirks.append(Quirk("substring-test", f"the substring test matched {', '.join(false_hits)} inside "
                                "another key or value, so expandable_segments:True was not appended."))
        if "expandable_segments" in tokens and "expandable_segments:True" not in conf \
                and "expandable_segments:False" not in conf:
            quirks.append(Quirk("bad-boolean", "expandable_segments is set with a value torch_npu rejects "
                                "(write True or False); the default was not applied."))
    after[NPU_VAR] = conf
    log.append(f"Set {NPU_VAR}={conf}")
    return PolicyResult(label, before, after, tuple(quirks), tuple(log))


def recommended_policy(
    environ: Mapping[str, str],
    *,
    sleep_mode: bool = False,
    torch_npu_version: str | None = None,
) -> PolicyResult:
    """The token-based policy the toolkit applies: same intent as upstream, none of the quirks.

    - parse the conf the process would really read (``toolkit.conf``), never substrings;
    - with sleep mode, make sure expandable segments are off (CaMem pools cannot use them);
    - otherwise add ``expandable_segments:True`` unless the user chose it, or chose a key that excludes it;
    - edit the variable torch_npu actually reads, so a ``PYTORCH_ALLOC_CONF``-only user is not overridden;
    - an empty variable means "no options" (no leading comma); an invalid conf is left alone and reported.
    """
    from toolkit import conf as confmod  # local: keeps this module importable without the conf grammar

    before = _alloc_vars(environ)
    after = dict(before)
    notes: list[str] = []
    try:
        effective = confmod.conf_from_environ(environ, platform="npu", version=torch_npu_version)
    except confmod.ConfError as err:
        return PolicyResult("toolkit (token-based)", before, after, notes=(f"left unchanged: {err}",))
    var = effective.variable or NPU_VAR
    parsed = effective.conf
    if sleep_mode:
        if parsed.options.get("expandable_segments") is True:
            after[var] = str(parsed.with_option("expandable_segments", False))
            notes.append("sleep mode: expandable_segments turned off (not compatible with memory pools)")
        return PolicyResult("toolkit (token-based)", before, after, notes=tuple(notes))
    if "expandable_segments" in parsed.options:
        notes.append("expandable_segments chosen explicitly: kept")
    elif any(k in parsed.options for k in _EXCLUSIVE):
        notes.append("max_split_size_mb / garbage_collection_threshold set: expandable_segments not added "
                     "(the NPU allocator refuses the combination)")
    else:
        after[var] = str(parsed.with_option("expandable_segments", True))
        notes.append(f"added expandable_segments:True to {var}")
    return PolicyResult("toolkit (token-based)", before, after, notes=tuple(notes))
