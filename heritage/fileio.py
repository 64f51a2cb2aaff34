"""Atomic writes and checked image reads.

Everything the project writes goes through a temporary file in the destination folder and an
``os.replace``, so an interrupted job never leaves a half-written file where a finished one is
expected. Reads name the file in every error.

A temporary file carries its owner (``<pid>@<host>``) in its name, so one left behind by a killed
process (kill -9, OOM killer, a node lost mid-job) can be told from one a running writer still uses:
:func:`remove_stale_temporaries` deletes those whose owner is a dead process on this host at once, and
any (another host's on a shared file system, an unowned legacy name, a dead owner's pid reused by a
new process) once untouched for ``STALE_AFTER_S``: a live writer keeps touching its files.

Image reads that may meet untrusted sizes (ingest) open the header first (:func:`open_lazy`) and
refuse more than ``max_pixels`` pixels before anything is decoded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from heritage import errors

# ARTeFACT originals reach ~130 MP; PIL's default bomb guard (89 MP) would refuse real scans.
# This global is PIL's own guard for every other read (it only warns up to twice the value);
# ingest passes an explicit limit (DEFAULT_MAX_PIXELS, --max-pixels) to open_lazy instead.
Image.MAX_IMAGE_PIXELS = 400_000_000
# The ARTeFACT dataset card raises PIL's limit to 243,748,701 px for its largest scan; a little above.
DEFAULT_MAX_PIXELS = 250_000_000
# The process umask, read once (os.umask can only be read by setting it): mkstemp creates files 0600,
# and a run folder or table on a shared cluster must get the permissions a plain open() would give.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# -- owners of temporary files and folders ---------------------------------------------------------
_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "localhost"
OWNER_PATTERN = r"(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9.-]+)"
# mkstemp/mkdtemp's random part: 8 characters of tempfile's alphabet.
RANDOM_PATTERN = r"[a-z0-9_]{8}"
# Leftovers of another host, names without an owner (written before owners were recorded) and those
# of a live pid (possibly reused) are removed once untouched this long: no write or ingest idles 6 h.
STALE_AFTER_S = 6 * 3600
# atomic_path's temporary: ".<name>.<pid>@<host>.<random>.tmp" (the legacy form had no owner).
TEMP_FILE_PATTERN = re.compile(rf"\.(?P<name>.+)\.{OWNER_PATTERN}\.{RANDOM_PATTERN}\.tmp")
LEGACY_TEMP_FILE_PATTERN = re.compile(rf"\.(?P<name>.+)\.{RANDOM_PATTERN}\.tmp")


def owner_tag() -> str:
    """``<pid>@<host>`` of this process, for names of temporary files and folders."""
    return f"{os.getpid()}@{_HOST}"


def owner_is_gone(match: re.Match | None, path: Path, now: float | None = None) -> bool:
    """Whether the temporary at ``path`` (owner parsed by ``match``, None for a legacy name) is junk.

    An owner on this host that is dead: junk at once. Otherwise the newest mtime of ``path`` and of
    the folders directly inside it (a running ingest keeps writing into them) must be STALE_AFTER_S old.
    """
    if match is not None and match.group("host") == _HOST and not _pid_alive(int(match.group("pid"))):
        return True
    newest = _newest_mtime(path)
    return newest is not None and (time.time() if now is None else now) - newest > STALE_AFTER_S


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _newest_mtime(path: Path) -> float | None:
    try:
        times = [path.stat().st_mtime]
        if path.is_dir():
            times += [p.stat().st_mtime for p in path.iterdir() if p.is_dir()]
    except FileNotFoundError:  # removed meanwhile by its owner
        return None
    return max(times)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete atomic_path's temporary files in ``folder`` left by dead writers; return those removed.

    Only names atomic_path creates are considered (TEMP_FILE_PATTERN, LEGACY_TEMP_FILE_PATTERN).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        match = TEMP_FILE_PATTERN.fullmatch(path.name)
        if match is None and not LEGACY_TEMP_FILE_PATTERN.fullmatch(path.name):
            continue
        if path.is_file() and not path.is_symlink() and owner_is_gone(match, path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The result keeps the mode of the file it replaces, or gets ``0o666 & ~umask`` when it is new.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the name must match TEMP_FILE_PATTERN, so remove_stale_temporaries can clean up after a kill -9
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # a file where a folder should be, no permission, a full disk: the user's to fix
        raise errors.OutputError(f"{path}: cannot write here ({err.strerror or err}"
                                 f"{': ' + str(err.filename) if err.filename else ''})") from None
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


def read_yaml(path: str | os.PathLike, invalid: type[Exception] = errors.InputError,
              missing: type[Exception] = errors.MissingInputError, missing_text: str = "file not found") -> Any:
    """A YAML file's content; a missing or unparsable file raises ``missing``/``invalid`` naming the path."""
    import yaml  # only config and the SLURM site files are YAML

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing(f"{path}: {missing_text}") from None
    except yaml.YAMLError as err:
        raise invalid(f"{path}: not valid YAML ({err})") from None


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of a uint8 array; lower ``compress_level`` trades file size for speed (lossless either way)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def open_image(source: str | os.PathLike | bytes, name: str | None = None,
               max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image from a path or bytes; errors name the file.

    ``max_pixels`` refuses larger images before decoding (see :func:`open_lazy`); None keeps PIL's guard.
    """
    return load(open_lazy(source, name, max_pixels), name or _label(source), max_pixels)


def _label(source: str | os.PathLike | bytes) -> str:
    return str(source) if not isinstance(source, bytes) else "<bytes>"


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int | None, opening: bool = False) -> Iterator[None]:
    """PIL's own bomb guard replaced by ``max_pixels`` meanwhile, so our check and message decide.

    While opening (header only) PIL's guard is off: open_lazy checks the size right after.
    """
    if max_pixels is None:
        yield
        return
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None if opening else max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def open_lazy(source: str | os.PathLike | bytes, name: str | None = None,
              max_pixels: int | None = None) -> Image.Image:
    """Open an image reading its header only (PIL decodes lazily); refuse more than ``max_pixels``.

    The size check costs nothing, so a small file declaring a huge canvas (a decompression bomb) is
    refused before it can allocate gigabytes. Decode with :func:`load` (after ``draft`` for JPEG).
    """
    label = name or _label(source)
    try:
        with _pil_pixel_limit(max_pixels, opening=True):
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise errors.MissingInputError(f"{label}: file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise errors.InputError(f"{label}: cannot read image ({err})") from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise errors.InputError(
            f"{label}: {width}x{height} = {width * height:,} pixels is above the limit of {max_pixels:,} "
            f"(a decompression bomb, or a scan larger than ARTeFACT's); if it is a genuine scan, raise the "
            f"limit (ingest --max-pixels), decoding it needs about {_gigabytes(width * height * 4)} of memory"
        )
    return image


def _gigabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def load(image: Image.Image, name: str, max_pixels: int | None = None) -> Image.Image:
    """Decode a lazily opened image now, so truncated files fail here (naming ``name``), not in a worker."""
    try:
        with _pil_pixel_limit(max_pixels):
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise errors.InputError(f"{name}: cannot read image ({err})") from None
    return image


def read_rgb(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL-readable image (grayscale, RGBA, 16-bit converted explicitly)."""
    return to_rgb_array(open_image(source, name))


def read_mask(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """(H, W) uint8 class-id mask; refuses colour or 16-bit masks instead of silently converting."""
    label = name or _label(source)
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
