"""Atomic writes and checked image reads.

Everything the project writes goes through a temporary file in the destination folder and an
``os.replace``, so an interrupted job never leaves a half-written file where a finished one is
expected. Reads name the file in every error.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from heritage import errors

# ARTeFACT originals reach ~130 MP; PIL's default bomb guard (89 MP) would refuse real scans.
Image.MAX_IMAGE_PIXELS = 400_000_000
# The process umask, read once (os.umask can only be read by setting it): mkstemp creates files 0600,
# and a run folder or table on a shared cluster must get the permissions a plain open() would give.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The result keeps the mode of the file it replaces, or gets ``0o666 & ~umask`` when it is new.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.MissingInputError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise errors.InputError(f"{path}: not valid JSON ({err})") from None


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of a uint8 array; lower ``compress_level`` trades file size for speed (lossless either way)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def open_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Open and fully decode an image from a path or bytes; errors name the file."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        if isinstance(source, bytes):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        image.load()  # decode now, so truncated files fail here and not later in a worker
    except FileNotFoundError:
        raise errors.MissingInputError(f"{label}: file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise errors.InputError(f"{label}: cannot read image ({err})") from None
    return image


def read_rgb(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL-readable image (grayscale, RGBA, 16-bit converted explicitly)."""
    return to_rgb_array(open_image(source, name))


def read_mask(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """(H, W) uint8 class-id mask; refuses colour or 16-bit masks instead of silently converting."""
    label = name or str(source)
    image = open_image(source, name)
    if image.mode not in ("L", "P"):
        raise errors.InputError(f"{label}: a class-id mask must be single-channel 8-bit, got mode {image.mode}")
    return np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.uint8)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image to (H, W, 3) uint8, scaling 16-bit and compositing alpha on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if data.max() > 255 else 255.0
        grey = np.clip(data / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
