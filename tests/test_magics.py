"""%alloc_conf through a real IPython InteractiveShell: thin wrapper, one-line UsageErrors, displayable results."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from toolkit.notebook._conf_magics import ToolkitMagics
from toolkit.notebook.conf_session import Session

NPU = "PYTORCH_NPU_ALLOC_CONF"


@pytest.fixture
def env() -> dict[str, str]:
    return {}


@pytest.fixture
def shell(env):
    ip = InteractiveShell.instance()
    ip.register_magics(ToolkitMagics(ip, session=Session(env)))
    yield ip
    InteractiveShell.clear_instance()


def test_show_returns_displayable_status(shell):
    status = shell.run_line_magic("alloc_conf", "")
    assert "<table>" in status._repr_html_()
    assert "PYTORCH_NPU_ALLOC_CONF" in str(status)


def test_set_writes_environment(shell, env):
    status = shell.run_line_magic("alloc_conf", "expandable_segments:True,page_size:1g")
    assert env[NPU] == str(status.effective.conf)
    assert status.effective.conf.page_size_1g


def test_spaces_in_the_conf_are_accepted(shell, env):
    shell.run_line_magic("alloc_conf", "expandable_segments:True, page_size:1g")
    assert "page_size:1g" in env[NPU]


def test_check_validates_only(shell, env):
    status = shell.run_line_magic("alloc_conf", "--check --platform cuda max_split_size_mb:256")
    assert env == {} and status.conf.max_split_size_bytes == 256 * 2**20


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("expandable_segment:True", "did you mean expandable_segments"),
        ("expandable_segments:true", "True"),
        ("expandable_segments:True,max_split_size_mb:256", "expandable_segments"),
        ("--platform tpu x:1", "invalid choice"),
        ("--bogus", "unrecognized arguments"),
        ("--reset expandable_segments:True", "--reset takes no conf"),
        ("--check", "--check needs a conf"),
        ("--sleep-mode", "go with --policy"),
        ("--policy fourteen", "unknown vllm-ascend version"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(shell, env, line, fragment):
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("alloc_conf", line)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert env == {}


def test_usage_error_in_a_cell_prints_no_traceback(shell, capsys):
    result = shell.run_cell("%alloc_conf expandable_segment:True")
    assert isinstance(result.error_in_exec, UsageError)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err


def test_reset_restores(shell, env):
    shell.run_line_magic("alloc_conf", "expandable_segments:True")
    shell.run_line_magic("alloc_conf", "--reset")
    assert env == {}


def test_policy_view(shell, env):
    env[NPU] = "page_size:1g"
    view = shell.run_line_magic("alloc_conf", "--policy 0.14.0rc1")
    assert view.upstream.after[NPU] == "page_size:1g,expandable_segments:True"
    assert "quirk" not in str(view)
    view = shell.run_line_magic("alloc_conf", "--policy 0.13.0")
    assert "no-default" in str(view)


def test_help_text_is_generated_from_the_parser(shell):
    assert "--policy" in ToolkitMagics.alloc_conf.__doc__
    with pytest.raises(UsageError):
        shell.run_line_magic("alloc_conf", "-h")  # add_help=False: -h is not a silent exit


def test_load_ext_registers_magic():
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "toolkit")
        assert "alloc_conf" in ip.magics_manager.magics["line"]
    finally:
        InteractiveShell.clear_instance()


def test_alloc_conf_says_when_a_running_engine_needs_a_restart(env):
    ip = InteractiveShell.instance()
    try:
        notes = iter([None, "the conf changed since the engine started: this needs a new engine"])
        ip.register_magics(ToolkitMagics(ip, session=Session(env), engine_note=lambda: next(notes)))
        first = ip.run_line_magic("alloc_conf", "expandable_segments:True")
        assert not any("new engine" in n for n in first.notes)
        second = ip.run_line_magic("alloc_conf", "expandable_segments:False")
        assert any("needs a new engine" in n for n in second.notes) and "needs a new engine" in str(second)
    finally:
        InteractiveShell.clear_instance()


def test_load_ext_wires_the_engine_note_to_the_engine_session(env):
    from toolkit.engines.sim import SimEngine

    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "toolkit")
        magics = ip.magics_manager.registry["ToolkitMagics"]
        llm_session = ip.magics_manager.registry["EngineMagics"].llm_session
        assert magics.engine_note == llm_session.conf_changed
        assert magics.engine_note() is None  # no engine running
        llm_session.engine = SimEngine("Qwen/Qwen3-VL-2B-Instruct", conf="", platform="npu")
        llm_session._engine_conf = "expandable_segments:True"
        magics.session.environ = env
        status = ip.run_line_magic("alloc_conf", "expandable_segments:False")
        assert any("needs a new engine" in n for n in status.notes)
    finally:
        InteractiveShell.clear_instance()
