"""Fixtures for the real-engine tests: the CPU-engine interpreter, the tiny model, images of several sizes.

Without ``.venv-vllm`` the engine tests are skipped with a loud reason (CI creates it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine_helpers import IMAGE_SIZES, ROOT, SKIP_REASON, VLLM_PYTHON, engine_env


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    if not VLLM_PYTHON.exists():
        pytest.skip(SKIP_REASON)
    return VLLM_PYTHON


@pytest.fixture(scope="session")
def tiny_model(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-qwen2-vl")
    subprocess.run([str(vllm_python), "-m", "toolkit._testing.tiny_model", str(out)], check=True, cwd=ROOT,
                   env=engine_env(), capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    for i, (w, h) in enumerate(IMAGE_SIZES):
        img = Image.new("RGB", (w, h), (40 * i % 255, 120, 200))
        for x in range(0, w, 7):  # some structure, so the pixels are not constant
            img.putpixel((x, (x * 3) % h), (255, 255, 255))
        img.save(folder / f"{i:04d}_{w}x{h}.{'png' if i % 2 else 'jpg'}")
    return folder
