"""Image inputs every engine accepts: a folder of photos (the seed script's extensions) or image files.

One place for the one-line errors a user sees for a missing folder, an empty folder, a missing file or a file
Pillow cannot read, so the simulated and the real engines answer bad input the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.core.errors import EngineError

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")  # the seed script's list


class InputError(EngineError):
    """One input cannot be used (a file Pillow cannot read, a truncated JPEG): it costs that request only.

    ``run_images`` records such a request as a failed sample with this message and goes on.
    """


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files of a folder (the seed script's extensions, either case), sorted by name."""
    p = Path(folder)
    if not p.is_dir():
        raise EngineError(f"{p} is not a folder")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise EngineError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {p}")
    return files


@contextmanager
def opened_image(path: str | os.PathLike[str]) -> Iterator[Image]:
    """The image file opened lazily by Pillow (only its header is read until pixels are asked for)."""
    from PIL import Image as PILImage, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"no image file at {p}")
    try:
        im = PILImage.open(p)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{p.name} is not an image Pillow can read: {exc}") from None
    with im:
        yield im


def load_rgb(path: str | os.PathLike[str]) -> Image:
    """The image file decoded to RGB (what a real engine sends); a truncated or corrupt file is an InputError.

    Pillow reads only the header at ``open``; a truncated JPEG fails when its pixels are decoded
    (``OSError: image file is truncated``), so decoding happens here, where the error can name the file.
    """
    with opened_image(path) as im:
        try:
            return im.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises SyntaxError for some corrupt headers
            raise InputError(f"{Path(path).name} cannot be decoded: {exc}") from None
