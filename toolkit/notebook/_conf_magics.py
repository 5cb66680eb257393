"""IPython magics: parse the line, call one ``Session`` method, return a displayable object.

Imported only by ``%load_ext toolkit`` (never by ``import toolkit``), so IPython stays optional.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from toolkit.conf import ConfError
from toolkit.core.errors import ToolkitError
from toolkit.notebook._magic_args import MagicArgumentParser, split_line
from toolkit.notebook.conf_session import PLATFORMS, Session
from toolkit.viz.tables import ConfStatus


def alloc_conf_parser() -> argparse.ArgumentParser:
    """The one parser of ``%alloc_conf``: used for parsing and for its help text."""
    p = MagicArgumentParser(
        prog="alloc_conf",
        add_help=False,
        description="Show, set, check or reset the device allocator conf before the engine loads.",
        epilog=(
            "examples:  %alloc_conf  |  %alloc_conf expandable_segments:True,page_size:1g  |  "
            "%alloc_conf --check max_split_size_mb:256  |  %alloc_conf --platform cuda --version 2.9 "
            "expandable_segments:True (this call only)  |  %alloc_conf --platform cuda --use (from now on)  |  "
            "%alloc_conf --policy 0.14.0rc1  |  %alloc_conf --reset"
        ),
    )
    p.add_argument("conf", nargs="*", help="conf string, e.g. expandable_segments:True,page_size:1g")
    p.add_argument("--platform", choices=PLATFORMS, default=None, help="npu (torch_npu) or cuda (PyTorch)")
    p.add_argument("--version", default=None, help="torch_npu / torch version to validate for (default: newest)")
    p.add_argument("--use", action="store_true",
                   help="keep --platform/--version for later calls (otherwise they apply to this call only; "
                        "--reset returns to the default)")
    p.add_argument("--check", action="store_true", help="validate only; do not change the environment")
    p.add_argument("--reset", action="store_true", help="restore the variables as they were before")
    p.add_argument("--policy", nargs="?", const="main", default=None, metavar="VLLM_ASCEND_VERSION",
                   help="show what vllm-ascend (default: main) does to the conf before its workers start")
    p.add_argument("--sleep-mode", action="store_true", help="with --policy: the engine uses sleep mode")
    p.add_argument("--rl", action="store_true", help="with --policy: additional_config.rl_config.enabled")
    return p


@magics_class
class ToolkitMagics(Magics):
    """The ascend-memlab magics. One ``Session`` per shell, shared by every magic."""

    def __init__(self, shell: Any, session: Session | None = None,
                 engine_note: Callable[[], str | None] | None = None) -> None:
        super().__init__(shell)
        self.session = session or Session()
        # says when a running engine no longer has the conf now set (it needs a restart); see load_ipython_extension
        self.engine_note = engine_note

    def _with_engine_note(self, status: ConfStatus) -> ConfStatus:
        note = self.engine_note() if self.engine_note is not None else None
        return replace(status, notes=(*status.notes, note)) if note else status

    @line_magic
    def alloc_conf(self, line: str) -> Any:
        args = alloc_conf_parser().parse_args(split_line(line, "alloc_conf"))
        text = " ".join(args.conf)
        if args.reset and (text or args.check):
            raise UsageError("%alloc_conf: --reset takes no conf string and no --check")
        if (args.sleep_mode or args.rl) and args.policy is None:
            raise UsageError("%alloc_conf: --sleep-mode and --rl go with --policy")
        if args.use and args.platform is None and args.version is None:
            raise UsageError("%alloc_conf: --use keeps --platform/--version: give one, e.g. --platform cuda --use")
        if args.check and not text:
            raise UsageError("%alloc_conf: --check needs a conf string, e.g. %alloc_conf --check expandable_segments:True")
        try:
            if args.reset:
                return self._with_engine_note(self.session.reset_conf())
            if args.use:  # the one sticky setting; without --use platform and version are for this call
                self.session.target(args.platform, args.version)
            if args.check:
                return self.session.check_conf(text, platform=args.platform, version=args.version)
            if text:
                status = self.session.set_conf(text, platform=args.platform, version=args.version)
            else:
                status = self.session.status(platform=args.platform, version=args.version)
            if args.policy is not None:
                return self.session.policy(args.policy, sleep_mode=args.sleep_mode, rl_enabled=args.rl)
            return self._with_engine_note(status)
        except (ConfError, ToolkitError) as err:
            raise UsageError(str(err)) from None


ToolkitMagics.alloc_conf.__doc__ = alloc_conf_parser().format_help()
