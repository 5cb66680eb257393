"""Importing toolkit or loading the extension must not import torch, touch a device or change the environment.

The allocator reads its conf once, at its first allocation; anything that touches the device early makes the
conf a silent no-op. Checked in fresh subprocesses so nothing else in the test session interferes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, os, sys
before = dict(os.environ)
{body}
print(json.dumps({{
    "torch": "torch" in sys.modules,
    "torch_npu": "torch_npu" in sys.modules,
    "heavy": sorted(m for m in ("vllm", "plotly", "pandas", "IPython") if m in sys.modules),
    "env_changed": dict(os.environ) != before,
}}))
"""


def run_probe(body: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_toolkit_is_clean():
    result = run_probe("import toolkit")
    assert result == {"torch": False, "torch_npu": False, "heavy": [], "env_changed": False}


@pytest.mark.parametrize("module", ["toolkit.conf", "toolkit.conf.policy", "toolkit.conf.guard", "toolkit.notebook.conf_session"])
def test_core_modules_do_not_import_torch(module):
    result = run_probe(f"import {module}")
    assert not result["torch"] and not result["env_changed"]


def test_load_ext_does_not_import_torch_or_change_env():
    body = (
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\n"
        "ip.run_line_magic('load_ext', 'toolkit')\n"
        "assert 'alloc_conf' in ip.magics_manager.magics['line']\n"
        "ip.run_line_magic('alloc_conf', '')\n"
    )
    result = run_probe(body)
    assert not result["torch"] and not result["torch_npu"]
    assert not result["env_changed"]


def test_every_lazy_export_resolves_without_torch():
    body = "import toolkit\nfor name in toolkit.__all__:\n    getattr(toolkit, name)\n"
    result = run_probe(body)
    assert not result["torch"] and not result["torch_npu"] and not result["env_changed"]
