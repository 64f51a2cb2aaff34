"""Atomic writes and checked image reads.

Everything the project writes goes through a temporary file in the destination folder and an
``os.replace``, so an interrupted job never leaves a half-written file where a finished one is
expected. Reads name the file in every error. A file whose presence marks work as finished
(``metrics.json``, a notebook's stamp, ``metadata.csv``, checkpoints) is written ``durable``: the
temporary is flushed to disk (``fsync``) before the rename and the folder after it, so a crash of the
node cannot leave it empty or missing after the work it marks was reported done.

Faults of the machine met while writing (a full disk or quota, a read-only file system, an I/O error:
:data:`MACHINE_ERRNOS`) become :class:`heritage.errors.MachineError` naming the path and, for a full
disk, the free space (:func:`write_error`); a text file in another encoding is one line naming the file,
line and byte offset (:func:`decode_text`).

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
import errno
import io
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image

from heritage import errors

# The ARTeFACT dataset card raises PIL's limit to 243,748,701 px for its largest scan; a little above.
# What ingest refuses (--max-pixels).
DEFAULT_MAX_PIXELS = 250_000_000
# The limit of every other read (data folder files, predict's scans): PIL's own bomb guard (89 MP)
# would refuse real scans, so each read sets its limit (_pil_pixel_limit) and our check names the file.
READ_MAX_PIXELS = 400_000_000

# -- owners of temporary files and folders ---------------------------------------------------------
HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "localhost"
OWNER_PATTERN = r"(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9.-]+)"
# mkstemp/mkdtemp's random part: 8 characters of tempfile's alphabet.
RANDOM_PATTERN = r"[a-z0-9_]{8}"
# Leftovers of another host, names without an owner (written before owners were recorded) and those
# of a live pid (possibly reused) are removed once untouched this long: no write or ingest idles 6 h.
STALE_AFTER_S = 6 * 3600
# atomic_path's temporary: ".<name>.<pid>@<host>.<random>.tmp" (the legacy form had no owner).
TEMP_FILE_PATTERN = re.compile(rf"\.(?P<name>.+)\.{OWNER_PATTERN}\.{RANDOM_PATTERN}\.tmp")
LEGACY_TEMP_FILE_PATTERN = re.compile(rf"\.(?P<name>.+)\.{RANDOM_PATTERN}\.tmp")
# errno values that say the machine, not the path the user gave, failed a read or write.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.ESTALE})


def owner_tag() -> str:
    """``<pid>@<host>`` of this process, for names of temporary files and folders."""
    return f"{os.getpid()}@{HOST}"


def owner_is_gone(match: re.Match | None, path: Path, now: float | None = None) -> bool:
    """Whether the temporary at ``path`` (owner parsed by ``match``, None for a legacy name) is junk.

    An owner on this host that is dead: junk at once. Otherwise the newest mtime of ``path`` and of
    the folders directly inside it (a running ingest keeps writing into them) must be STALE_AFTER_S old.
    """
    if match is not None and match.group("host") == HOST and not pid_alive(int(match.group("pid"))):
        return True
    newest = _newest_mtime(path)
    return newest is not None and (time.time() if now is None else now) - newest > STALE_AFTER_S


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (this process counts; another user's too)."""
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


# -- faults of the machine ---------------------------------------------------------------------------


def is_machine_fault(err: BaseException) -> bool:
    """Whether ``err`` is a fault of the machine (:data:`MACHINE_ERRNOS`), not of a path or a value."""
    return isinstance(err, OSError) and err.errno in MACHINE_ERRNOS


def describe_fault(path: str | os.PathLike, err: OSError) -> str:
    """``<path>: <what the machine did>``, e.g. ``runs/x/metrics.json: disk full (no space left on device;
    1.2 MB free of 1.0 GB on /scratch)``."""
    path = Path(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large for its file system"}[err.errno]
        return f"{path}: {what} ({err.strerror or err}; {free_space(path)})"
    if err.errno == errno.EROFS:
        return f"{path}: read-only file system ({_mount_point(path)} is mounted read-only)"
    if err.errno == errno.ESTALE:
        return f"{path}: stale file handle (the network file system lost the file)"
    if err.errno == errno.EIO:
        return f"{path}: input/output error (a failing disk or a lost network file system)"
    return f"{path}: {err.strerror or err}"


def write_error(path: str | os.PathLike, err: OSError) -> errors.HeritageError:
    """The expected error for an OSError met writing ``path`` (named, not a temporary it went through):
    :class:`~heritage.errors.MachineError` for a fault of the machine (exit 74), else
    :class:`~heritage.errors.OutputError` (no permission, a file where a folder should be: the user's path
    to fix, exit 2)."""
    if isinstance(err, errors.HeritageError):
        return err
    if is_machine_fault(err):
        return errors.MachineError(describe_fault(path, err))
    return errors.OutputError(f"{path}: cannot write here ({err.strerror or err}"
                              f"{': ' + str(err.filename) if err.filename else ''})")


def free_space(path: str | os.PathLike) -> str:
    """``<free> free of <total> on <mount point>`` for the file system holding ``path``."""
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError:
        return "free space unknown"
    return f"{_size(usage.free)} free of {_size(usage.total)} on {_mount_point(existing)}"


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def _mount_point(path: str | os.PathLike) -> Path:
    folder = Path(os.path.abspath(path))
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk (before it is renamed into place)."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_directory(folder: str | os.PathLike) -> None:
    """Flush a folder's entries to disk (after a rename into it), where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform without directory handles: the rename is as durable as it gets
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):  # a file system that cannot
            raise
    finally:
        os.close(fd)


def flush_files(folder: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> None:
    """Flush ``paths`` (files below ``folder``) to disk before a file that marks them complete is written.

    One ``syncfs`` of ``folder``'s file system where Linux offers it (a call, where an fsync per file costs
    a journal commit each: hundreds of images), else an fsync per file.
    """
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:
        fsync_file(path)


def _syncfs():
    """libc's ``syncfs`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


# -- atomic writes ---------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The result keeps the mode of the file it replaces, or gets ``0o666 & ~umask`` when it is new.
    ``durable``: the temporary is flushed to disk before the rename and the folder after it. A fault of
    the machine while writing (disk full, read-only, I/O error) raises MachineError naming ``path``; the
    file it would have replaced is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the name must match TEMP_FILE_PATTERN, so remove_stale_temporaries can clean up after a kill -9
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # a file where a folder should be, no permission, a full disk: the user's to fix
        raise write_error(path, err) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~process_umask()
        try:
            os.chmod(tmp_path, mode)
            if durable:
                fsync_file(tmp_path)
            os.replace(tmp_path, path)
            if durable:
                fsync_directory(path.parent)
        except OSError as err:
            raise write_error(path, err) from None
    except OSError as err:  # the write itself failed: a full disk is the machine's, not a bug
        if is_machine_fault(err) and not isinstance(err, errors.HeritageError):
            raise errors.MachineError(describe_fault(path, err)) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, durable: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", durable)


def decode_text(data: bytes, path: str | os.PathLike, encoding: str = "utf-8", hint: str = "",
                csv_header: bool = False) -> str:
    """``data`` (the bytes of the text file ``path``) decoded; a byte that is not valid ``encoding`` is one
    InputError naming the file, the line (and, for a CSV file with a header, the row as ingest counts them:
    0 is the first after the header), the byte offset and the byte, the encoding it decodes with (cp1252,
    what Excel writes, else latin-1) and ``hint`` (how to pass that encoding). UTF-8 skips a BOM."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except LookupError:
        raise errors.InputError(f"{path}: unknown text encoding {encoding!r} (e.g. utf-8, cp1252, latin-1)") from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1)
        byte = data[err.start: err.start + 1]
        guess = "latin-1"
        with contextlib.suppress(UnicodeDecodeError):
            data.decode("cp1252")
            guess = "cp1252"
        shown = byte.decode(guess, errors="replace")
        row = f" (row {line - 2})" if csv_header and line >= 2 else ""
        raise errors.InputError(
            f"{path}: line {line}{row}, byte offset {err.start} (column {column + 1}): byte 0x{byte.hex()} is not "
            f"valid {encoding} (in {guess} it is {shown!r}); the file is probably {guess}-encoded"
            + (f": {hint.format(encoding=guess)}" if hint else "")) from None


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


def write_png(path: str | os.PathLike, array: np.ndarray, durable: bool = False) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically (``durable``: see :func:`atomic_path`)."""
    with atomic_path(path, durable) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of a uint8 array; lower ``compress_level`` trades file size for speed (lossless either way)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def process_umask() -> int:
    """The process umask: mkstemp creates files 0600, and a run folder or table on a shared cluster must get
    the permissions a plain open() would give. Read from /proc where Linux shows it, else by setting and
    restoring it (os.umask has no read-only form)."""
    status = Path("/proc/self/status")
    found = re.search(r"^Umask:\s*([0-7]+)$", status.read_text(), re.MULTILINE) if status.exists() else None
    if found:
        return int(found.group(1), 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_image(source: str | os.PathLike | bytes, name: str | None = None,
               max_pixels: int | None = READ_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image from a path or bytes; errors name the file.

    ``max_pixels`` refuses larger images before decoding (see :func:`open_lazy`); None: no limit.
    """
    return load(open_lazy(source, name, max_pixels), name or _label(source), max_pixels)


def _label(source: str | os.PathLike | bytes) -> str:
    return str(source) if not isinstance(source, bytes) else "<bytes>"


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int | None, opening: bool = False) -> Iterator[None]:
    """PIL's own bomb guard replaced by ``max_pixels`` (None: off) meanwhile, so our check and message decide.

    While opening (header only) PIL's guard is off: open_lazy checks the size right after.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None if opening else max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def open_lazy(source: str | os.PathLike | bytes, name: str | None = None,
              max_pixels: int | None = READ_MAX_PIXELS) -> Image.Image:
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


def load(image: Image.Image, name: str, max_pixels: int | None = READ_MAX_PIXELS) -> Image.Image:
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
