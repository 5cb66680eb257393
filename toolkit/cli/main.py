"""Headless use: ``python -m toolkit`` / ``ascend-memlab``. Same API and same one-line errors as the magics.

    ascend-memlab conf check "expandable_segments:True,page_size:1g" --platform npu
    ascend-memlab conf show                      # what a process started now would run with
    ascend-memlab conf policy --vllm-ascend 0.14.0rc1
    ascend-memlab scenario --photos 100 --conf "" --conf expandable_segments:True --out out/sweep
    ascend-memlab replay trace.pickle --conf recorded --conf expandable_segments:True
    ascend-memlab demo                            # the main job (the README's `make demo`)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from toolkit.core.errors import ToolkitError

Handler = Callable[[argparse.Namespace], int]


def _cmd_conf_check(args: argparse.Namespace) -> int:
    from toolkit.notebook.conf_session import Session

    print(Session({}, platform=args.platform).check_conf(args.conf, version=args.version))
    return 0


def _cmd_conf_show(args: argparse.Namespace) -> int:
    from toolkit.notebook.conf_session import Session

    session = Session(platform=args.platform)
    session.target(version=args.version)
    print(session.status())
    return 0


def _cmd_conf_policy(args: argparse.Namespace) -> int:
    from toolkit.notebook.conf_session import Session

    view = Session(platform="npu").policy(args.vllm_ascend, sleep_mode=args.sleep_mode, rl_enabled=args.rl)
    print(view)
    return 0


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ascend-memlab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    conf = sub.add_parser("conf", help="check allocator conf strings and what vllm-ascend does to them")
    conf_sub = conf.add_subparsers(dest="conf_command", required=True)
    check = conf_sub.add_parser("check", help="validate a conf string for a platform and version")
    check.add_argument("conf")
    show = conf_sub.add_parser("show", help="the conf a process started now would run with")
    for p in (check, show):
        p.add_argument("--platform", choices=("npu", "cuda"), default="npu")
        p.add_argument("--version", default=None, help="torch_npu / torch version (default: newest)")
    check.set_defaults(handler=_cmd_conf_check)
    show.set_defaults(handler=_cmd_conf_show)
    pol = conf_sub.add_parser("policy", help="what vllm-ascend does to PYTORCH_NPU_ALLOC_CONF")
    pol.add_argument("--vllm-ascend", default=None, metavar="VERSION", help="e.g. 0.14.0rc1 (default: main)")
    pol.add_argument("--sleep-mode", action="store_true")
    pol.add_argument("--rl", action="store_true", help="additional_config.rl_config.enabled")
    pol.set_defaults(handler=_cmd_conf_policy)

    from toolkit.cli._runs import add_commands  # scenario, demo, replay

    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ToolkitError, ValueError, OSError) as err:
        print(f"ascend-memlab: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except RecursionError:
        print("ascend-memlab: error: the input is nested too deeply", file=sys.stderr)
        return 2
    except MemoryError:
        print("ascend-memlab: error: out of memory reading the input", file=sys.stderr)
        return 2
    except Exception as err:
        if os.environ.get("MEMLAB_DEBUG"):
            raise
        print(f"ascend-memlab: internal error: {type(err).__name__}: {_one_line(str(err))} (a bug in ascend-memlab; "
              "MEMLAB_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("ascend-memlab: interrupted (results written so far are kept)", file=sys.stderr)
        return 130
