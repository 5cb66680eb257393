"""A seeded photo set of mixed sizes, generated with Pillow (the seed scenario's stand-in for the
private photo set of vllm-ascend PR #5855).

What matters to device memory is each image's pixel size (it decides the visual tokens), so the set
mixes what people send a multi-modal model, in both orientations and with crops, giving many distinct
sizes: 12 MP phone photos (4032x3024 / 3024x4032), other camera sizes, phone and desktop screenshots,
panoramas, mid-size web images and thumbnails. Content has real structure (sky/ground gradients,
shapes, texture noise for photos; bars, panels and text-like lines for screenshots) and is saved the way
such files are: JPEG for photos, PNG for screenshots. Generation draws at reduced resolution and
upscales, so a 12 MP JPEG costs ~0.1 s; the set is written once and reused (existing files are kept).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

# (kind, weight, base sizes (w, h), file format); each base size is also used rotated for photos
_KINDS: tuple[tuple[str, float, tuple[tuple[int, int], ...], str], ...] = (
    ("phone", 0.40, ((4032, 3024),), "JPEG"),  # 12 MP, both orientations
    ("camera", 0.10, ((4000, 3000), (4624, 3468), (6000, 4000), (2592, 1944)), "JPEG"),
    ("screenshot", 0.15, ((1179, 2556), (1170, 2532), (1080, 2400), (1920, 1080), (2560, 1440),
                          (2880, 1800)), "PNG"),
    ("panorama", 0.08, ((8064, 2304), (6000, 1500), (4000, 1200)), "JPEG"),
    ("web", 0.15, ((1600, 1200), (1280, 960), (2048, 1536), (1024, 768), (1920, 1280)), "JPEG"),
    ("thumbnail", 0.12, ((320, 240), (256, 256), (400, 300), (160, 120), (480, 360)), "JPEG"),
)


@dataclass(frozen=True, slots=True)
class PhotoSpec:
    """One photo of the set: its file name, pixel size, kind and format."""

    name: str
    width: int
    height: int
    kind: str
    fmt: str  # "JPEG" | "PNG"


def photo_specs(n: int, seed: int = 0) -> list[PhotoSpec]:
    """The sizes and kinds of an ``n``-photo set (pure, deterministic for a seed)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    weights = [k[1] for k in _KINDS]
    specs = []
    for i in range(n):
        kind, _, sizes, fmt = rng.choices(_KINDS, weights)[0]
        w, h = rng.choice(sizes)
        if kind in ("phone", "camera", "web") and rng.random() < 0.5:
            w, h = h, w  # portrait
        if kind in ("phone", "camera", "web", "panorama") and rng.random() < 0.35:
            # edited / cropped copies: keep 80-100% of each side
            w = max(16, int(w * rng.uniform(0.8, 1.0)))
            h = max(16, int(h * rng.uniform(0.8, 1.0)))
        ext = "jpg" if fmt == "JPEG" else "png"
        specs.append(PhotoSpec(f"{i:04d}_{kind}_{w}x{h}.{ext}", w, h, kind, fmt))
    return specs


def _draw(spec: PhotoSpec, rng: random.Random):  # -> PIL.Image.Image
    from PIL import Image, ImageDraw, ImageFilter

    scale = 8 if spec.width * spec.height > 2_000_000 else 2
    sw, sh = max(8, spec.width // scale), max(8, spec.height // scale)
    if spec.kind == "screenshot":
        img = Image.new("RGB", (sw, sh), (rng.randrange(230, 256),) * 3)
        d = ImageDraw.Draw(img)
        d.rectangle((0, 0, sw, max(2, sh // 14)), fill=(rng.randrange(40, 90), rng.randrange(60, 140), 200))
        y = sh // 10
        while y < sh - 4:
            x0 = rng.randrange(2, max(3, sw // 10))
            d.line((x0, y, x0 + rng.randrange(sw // 4, max(sw // 4 + 1, sw - 2 * x0)), y),
                   fill=(rng.randrange(20, 90),) * 3, width=max(1, sh // 300))
            if rng.random() < 0.1:
                d.rectangle((x0, y, sw - x0, y + sh // 12), outline=(180, 180, 180), fill=(245, 246, 250))
                y += sh // 12
            y += max(3, sh // 60)
        return img.resize((spec.width, spec.height), Image.Resampling.NEAREST)
    # photo-like: sky/ground gradient, shapes, texture
    img = Image.linear_gradient("L").resize((sw, sh))
    sky = (rng.randrange(60, 140), rng.randrange(120, 200), rng.randrange(180, 255))
    ground = (rng.randrange(40, 120), rng.randrange(60, 140), rng.randrange(20, 80))
    img = Image.merge("RGB", [img.point(lambda v, a=a, b=b: a + (b - a) * v // 255) for a, b in zip(sky, ground)])
    d = ImageDraw.Draw(img)
    for _ in range(rng.randrange(6, 20)):
        x, y = rng.randrange(sw), rng.randrange(sh)
        r = rng.randrange(2, max(3, min(sw, sh) // 3))
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            d.ellipse((x - r, y - r, x + r, y + r), fill=color)
        else:
            d.rectangle((x - r, y - r // 2, x + r, y + r), fill=color)
    noise = Image.effect_noise((sw, sh), rng.randrange(20, 60)).convert("RGB")
    img = Image.blend(img, noise, 0.15).filter(ImageFilter.SMOOTH)
    return img.resize((spec.width, spec.height), Image.Resampling.BILINEAR)


def generate_photo_set(out_dir: str | Path, n: int, seed: int = 0) -> list[Path]:
    """Write the ``n``-photo set into ``out_dir`` (kept files are not redrawn); returns the paths in order."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in photo_specs(n, seed):
        path = folder / spec.name
        if not path.exists():
            rng = random.Random(f"{seed}:{spec.name}")
            img = _draw(spec, rng)
            tmp = path.with_suffix(path.suffix + ".part")
            if spec.fmt == "JPEG":
                img.save(tmp, "JPEG", quality=85)
            else:
                img.save(tmp, "PNG", compress_level=1)
            tmp.replace(path)
        paths.append(path)
    return paths
