"""Run hostile cases in child processes with time and memory limits, and classify what happened.

Parent side: ``run_cases(cases, workdir, tree)`` starts a worker (``python hostile_runner.py --worker``) whose
address space is capped (``RLIMIT_AS``), hands it case indices one at a time and waits at most
``timeout_s`` for each answer: no answer is a **hang** (the worker is killed and a fresh one takes the rest),
a dead worker is a **crash**. Worker side: runs the case through the real entry point (``load_snapshot``,
``load_run``, ``replay``, ``toolkit.cli.main``, or a magic line through a real IPython
``InteractiveShell``), then answers one JSON line: outcome, seconds, peak-RSS growth, the message.

Outcomes: ``clear`` (refused with the toolkit's one-line error: ``ToolkitError`` / ``UsageError`` / exit 2
with one stderr line), ``ok`` (accepted, where accepting is fine), ``silent`` (accepted something that must
be refused), ``crash`` (any other exception, a multi-line message, a side effect, a dead worker), ``hang``.
The same cases run against any tree: ``tree`` goes first on the worker's ``sys.path``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import select
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MAX_MESSAGE_CHARS = 400
MEMORY_HEADROOM_BYTES = 3 << 30  # address-space cap of the worker beyond its size after imports
TIME_BOUND_S = 5.0  # an answer slower than this counts as a hang
MEMORY_BOUND_KIB = 512 << 10  # a case that grows the worker's peak RSS more than this counts as a crash


@dataclass
class Result:
    index: int
    area: str
    name: str
    outcome: str
    seconds: float
    rss_growth_kib: int
    message: str


# -- worker ----------------------------------------------------------------------------------------------
class _Worker:
    def __init__(self, workdir: Path) -> None:
        sys.path.insert(0, str(HERE))
        from hostile_cases import all_cases

        self.workdir = workdir
        self.cases = all_cases(workdir)
        self.canary = workdir / "CANARY-code-ran"
        self.shell: Any = None
        import toolkit.core.records
        import toolkit.snapshot  # noqa: F401  imports before the memory cap is measured
        try:
            from toolkit.snapshot import _unpickler as unpickler

            self._defaults = {k: (getattr(v, "__defaults__", None), getattr(v, "__kwdefaults__", None),
                                  dict(getattr(v, "__dict__", {})))
                              for k, v in unpickler._SAFE_GLOBALS.items()}
        except Exception:  # noqa: BLE001
            self._defaults = {}

    def _side_effects(self) -> str:
        if self.canary.exists():
            return "the canary file exists: code from the input ran"
        try:
            from toolkit.snapshot import _unpickler as unpickler
        except ImportError:
            return ""

        now = {k: (getattr(v, "__defaults__", None), getattr(v, "__kwdefaults__", None),
                   dict(getattr(v, "__dict__", {})))
               for k, v in unpickler._SAFE_GLOBALS.items()}
        if now != self._defaults:
            return "an allowed function of the unpickler was changed"
        return ""

    def _shell(self) -> Any:
        if self.shell is None:
            from IPython.core.interactiveshell import InteractiveShell

            os.chdir(self.workdir / "cwd")
            self.shell = InteractiveShell.instance()
            self.shell.run_line_magic("load_ext", "toolkit")
            from toolkit.core.records import MemorySample, Run

            samples = tuple(MemorySample(request_index=i, request_id=f"r{i}", rank=0, started_at_ns=i,
                                         duration_ns=1, reserved_bytes=(i + 1) << 20) for i in range(3))
            self.shell.user_ns["hostile_run"] = Run(
                name="hostile", backend="sim", platform="npu", model="m", conf=None, effective_conf="",
                device_capacity_bytes=1 << 30, simulated=True, status="ok", samples=samples)
            self.shell.user_ns["hostile_obj"] = object()
        return self.shell

    def run(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        before = _reset_peak_rss_kib()
        t0 = time.perf_counter()
        outcome, message = self._classify(case)
        seconds = time.perf_counter() - t0
        extra = self._check(case, message) if outcome in ("clear", "ok") else self._side_effects()
        if extra:
            outcome, message = "crash", extra
        growth = max(0, _status_kib("VmHWM") - before)
        # a side effect poisons this process: the parent starts a fresh worker for the next case
        return {"outcome": outcome, "seconds": seconds, "rss_growth_kib": growth, "message": message[:300],
                "restart": bool(extra and self._side_effects())}

    def _classify(self, case: Any) -> tuple[str, str]:
        from toolkit.core.errors import ToolkitError

        try:
            if case.kind == "magic":
                return self._magic(case)
            if case.kind == "cli":
                return self._cli(case)
            if case.kind == "snapshot":
                from toolkit.snapshot import load_snapshot

                load_snapshot(case.arg)
            elif case.kind == "runfile":
                from toolkit.core.records import load_run

                self.last_run = load_run(case.arg)
            elif case.kind == "replay":
                from toolkit.replay import replay

                replay(case.arg)
        except ToolkitError as err:
            return _one_line_or_crash(str(err), type(err).__name__, name_hint=Path(case.arg).name)
        except BaseException as err:
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            return "crash", f"{type(err).__name__}: {str(err)[:200]}"
        return ("ok" if case.expect == "any" else "silent"), ""

    def _cli(self, case: Any) -> tuple[str, str]:
        from toolkit.cli import main

        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                rc = main(["replay", case.arg])
        except SystemExit as exc:
            rc = exc.code
        except BaseException as exc:  # noqa: BLE001
            return "crash", f"uncaught {type(exc).__name__}: {str(exc)[:200]}"
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        if rc == 0:
            return ("ok" if case.expect == "any" else "silent"), ""
        if rc == 2 and len(lines) == 1 and "Traceback" not in err.getvalue() and len(lines[0]) <= MAX_MESSAGE_CHARS:
            return "clear", lines[0]
        return "crash", f"exit {rc}, {len(lines)} stderr lines: {' | '.join(lines)[:200]}"

    def _magic(self, case: Any) -> tuple[str, str]:
        from IPython.core.error import UsageError

        shell = self._shell()
        for line in case.setup:
            with contextlib.suppress(Exception):
                _run_magic(shell, line)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                result = _run_magic(shell, case.arg)
                if result is not None and hasattr(result, "_ipython_display_"):
                    pass  # the magic's return value is displayed by IPython; not needed to score it
        except UsageError as exc:
            return _one_line_or_crash(str(exc), "UsageError")
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            return "crash", f"{type(exc).__name__}: {str(exc)[:200]}"
        return ("ok" if case.expect == "any" else "silent"), ""

    def _check(self, case: Any, message: str) -> str:
        """The named extra check of a case (state left behind, side effects); '' when it holds."""
        problem = self._side_effects()
        if problem:
            return problem
        check = case.check
        if check == "incomplete" and "incomplete" not in (getattr(self, "last_run", None).message or ""):
            return "a request cut between its ranks loaded without being named"
        if case.kind != "magic":
            return ""
        shell = self._shell()
        magics = shell.magics_manager.registry.get("ToolkitMagics")
        if check == "platform_npu" and magics is not None and magics.session.platform != "npu":
            magics.session.target("npu")
            return f"a refused %alloc_conf switched the session to {magics.session.platform}"
        if check in ("platform_npu", "conf_unset") and os.environ.get("PYTORCH_CUDA_ALLOC_CONF") not in (None, ""):
            os.environ.pop("PYTORCH_CUDA_ALLOC_CONF", None)
            return "a refused %alloc_conf wrote PYTORCH_CUDA_ALLOC_CONF"
        if check in ("ipython_names", "after_random"):
            ns = shell.user_ns
            import builtins

            broken = [n for n in ("get_ipython", "In", "Out", "_", "exit") if n in ns and
                      getattr(ns[n], "__module__", "").startswith("toolkit")]
            if not callable(ns.get("get_ipython")) or ns.get("__builtins__") not in (builtins, builtins.__dict__):
                broken.append("get_ipython/__builtins__")
            if broken:
                return f"a magic rebound IPython's own names: {broken}"
        if check in ("no_escape", "after_random"):
            escaped = [*self.workdir.glob("escape*"), *Path("/tmp").glob("abs-*.jsonl")]
            if escaped:
                return f"a run file was written outside runs/: {escaped[0]}"
        return ""


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith(key + ":"))


def _reset_peak_rss_kib() -> int:
    """Reset this process's peak RSS (Linux >= 4.0: ``5`` in ``/proc/self/clear_refs``); return the RSS now.

    Then ``VmHWM`` after a case is the peak *that case* reached.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status_kib("VmRSS")


def _run_magic(shell: Any, line: str) -> Any:
    name, _, rest = line.lstrip("%").partition(" ")
    return shell.run_line_magic(name, rest)


def _one_line_or_crash(message: str, kind: str, name_hint: str = "") -> tuple[str, str]:
    if "\n" in message.strip() or len(message) > MAX_MESSAGE_CHARS:
        return "crash", f"{kind} with a {len(message)}-char / multi-line message: {message[:160]!r}"
    return "clear", message


def worker_main(workdir: Path) -> None:
    proto = os.fdopen(os.dup(1), "w")  # answers go here; anything the code under test prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = _Worker(workdir)
    (workdir / "cwd").mkdir(exist_ok=True)
    with contextlib.suppress(Exception):  # IPython and plotting load before the clock and the memory cap
        worker._shell()
        import plotly.graph_objects  # noqa: F401
    size = int(next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmSize:"))) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM_BYTES, resource.RLIM_INFINITY))
    proto.write(json.dumps({"ready": len(worker.cases)}) + "\n")
    proto.flush()
    for line in sys.stdin:
        index = int(line)
        try:
            answer = worker.run(index)
        except MemoryError:
            answer = {"outcome": "crash", "seconds": 0.0, "rss_growth_kib": 0, "message": "MemoryError"}
        proto.write(json.dumps(answer) + "\n")
        proto.flush()


# -- parent ----------------------------------------------------------------------------------------------
class _Child:
    def __init__(self, workdir: Path, tree: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg",
                   TQDM_DISABLE="1")
        env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
        env.pop("PYTORCH_NPU_ALLOC_CONF", None)
        self.proc = subprocess.Popen([sys.executable, str(HERE / "hostile_runner.py"), "--worker", str(workdir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, text=True, bufsize=1)
        ready = self._read(120.0)
        if ready is None or "ready" not in ready:
            raise RuntimeError("the hostile worker did not start")
        self.count = ready["ready"]

    def _read(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"dead": True}

    def ask(self, index: int, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run_cases(workdir: str | os.PathLike[str], tree: str | os.PathLike[str], *, timeout_s: float = 10.0,
              only: list[int] | None = None) -> list[Result]:
    """Every case (or the indices in ``only``) through fresh-as-needed workers; one ``Result`` each."""
    sys.path.insert(0, str(HERE))
    from hostile_cases import all_cases

    workdir = Path(workdir)
    cases = all_cases(workdir)
    child: _Child | None = None
    results: list[Result] = []
    try:
        for i in (only if only is not None else range(len(cases))):
            c = cases[i]
            if child is None:
                child = _Child(workdir, Path(tree))
            t0 = time.perf_counter()
            answer = child.ask(i, timeout_s)
            if answer is None:
                child.kill()
                child = None
                results.append(Result(i, c.area, c.name, "hang", time.perf_counter() - t0, 0,
                                      f"no answer within {timeout_s:.0f} s"))
            elif answer.get("dead"):
                child.kill()
                child = None
                results.append(Result(i, c.area, c.name, "crash", time.perf_counter() - t0, 0,
                                      "the worker died (memory limit or a fatal error)"))
            else:
                outcome, message = answer["outcome"], answer["message"]
                if answer["seconds"] > TIME_BOUND_S:
                    outcome, message = "hang", f"answered after {answer['seconds']:.1f} s: {message}"
                elif answer["rss_growth_kib"] > MEMORY_BOUND_KIB:
                    outcome, message = "crash", f"used {answer['rss_growth_kib'] >> 10} MiB: {message}"
                results.append(Result(i, c.area, c.name, outcome, answer["seconds"], answer["rss_growth_kib"],
                                      message))
                if answer.get("restart"):
                    child.kill()
                    child = None
                    (workdir / "CANARY-code-ran").unlink(missing_ok=True)
                    results.append(Result(-1, "canary", f"after {c.name}", "crash", 0.0, 0,
                                          "side effect: " + answer["message"]))
    finally:
        if child is not None:
            child.kill()
    if (workdir / "CANARY-code-ran").exists():
        results.append(Result(-1, "canary", "canary", "crash", 0.0, 0, "code from an input ran"))
    else:
        results.append(Result(-1, "canary", "canary", "clear", 0.0, 0, "no input ran code"))
    return results


def summarize(results: list[Result]) -> str:
    """A table: per area, how many were tried, refused clearly, accepted, silent, crashed, hung."""
    areas = sorted({r.area for r in results})
    cols = ("tried", "clear", "ok", "silent", "crash", "hang")
    rows = [("area", *cols)]
    total: Counter[str] = Counter()
    for a in areas:
        c = Counter(r.outcome for r in results if r.area == a)
        c["tried"] = sum(1 for r in results if r.area == a)
        total.update(c)
        rows.append((a, *(str(c[k]) for k in cols)))
    rows.append(("all", *(str(total[k]) for k in cols)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols) + 1)]
    text = "\n".join("  ".join(v.rjust(w) if j else v.ljust(w) for j, (v, w) in enumerate(zip(r, widths)))
                     for r in rows)
    done = [r for r in results if r.outcome != "hang"]
    slow = max(done, key=lambda r: r.seconds, default=None)
    big = max(done, key=lambda r: r.rss_growth_kib, default=None)
    if slow is not None and big is not None:
        text += (f"\nslowest answered case: {slow.area}/{slow.name} {slow.seconds:.2f} s; "
                 f"largest peak-RSS growth: {big.area}/{big.name} {big.rss_growth_kib / 1024:.0f} MiB")
    return text


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        worker_main(Path(sys.argv[2]))
