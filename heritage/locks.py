"""One writer per folder: the lock a command holds on a run folder or a data folder while it writes.

``train`` holds its run folder, ``data ingest``, ``augment`` and ``split`` their data folder. A second
command on the same folder is refused at once, naming the process that holds it (pid, host, command,
since when), instead of both writing and interleaving their files.

The lock is the file ``<folder>/.heritage.lock``, locked with ``flock`` while its owner runs and
holding the owner's pid, host, start time and command (what the refusal says). The kernel releases
a ``flock`` when its process ends however it ends (kill -9, the OOM killer), so a lock file left by
a dead process is simply taken over, with a warning naming it. Where the file system has no
``flock`` (some cluster file systems), the file's content decides: an owner on this host that is no
longer running (its pid gone, or reused by a process started later) is taken over, another host's
lock is refused with the command that removes it once that job is known to be finished.

The owner removes the file when it releases the lock, on every exit path (exception, Ctrl-C, SIGTERM
handled as an exception); a process that dies leaves it for the next one to take over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from heritage import errors, fileio

LOCK_FILE = ".heritage.lock"
# errno values of a file system that does not implement flock: fall back to the owner recorded in the file
_NO_FLOCK = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


@dataclass(frozen=True)
class Owner:
    """Who holds a lock, as recorded in the lock file."""

    pid: int
    host: str
    started: float  # the owner process's start time (seconds since the epoch), to tell a reused pid
    command: str
    since: str

    def describe(self) -> str:
        return f"{self.command} (pid {self.pid} on {self.host}, since {self.since})"

    def is_dead(self) -> bool:
        """Whether this owner is known to have ended: it ran on this host and its pid is gone or reused."""
        if self.host != fileio.HOST:
            return False
        started = process_start_time(self.pid)
        return started is None or (self.started > 0 and abs(started - self.started) > 2.0)


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, Linux /proc), or None when it does not exist.

    Elsewhere a live pid gives 0.0 (start time unknown: a reused pid then counts as its owner).
    """
    if not fileio.pid_alive(pid):
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def _read_owner(path: Path) -> Owner | None:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return Owner(int(values["pid"]), str(values["host"]), float(values.get("started", 0.0)),
                     str(values.get("command", "a heritage command")), str(values.get("since", "an unknown time")))
    except (OSError, ValueError, KeyError, TypeError):  # empty (its owner died creating it) or foreign
        return None


def _this_owner(command: str) -> Owner:
    pid = os.getpid()
    return Owner(pid, fileio.HOST, process_start_time(pid) or 0.0, command,
                 time.strftime("%Y-%m-%d %H:%M:%S %Z"))


@contextlib.contextmanager
def hold(folder: str | os.PathLike, command: str, warn: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for ``command`` (e.g. ``"heritage train"``) while the block runs.

    Raises :class:`heritage.errors.FolderBusy` at once when a live process holds it; takes over, with a
    warning through ``warn`` (default: stderr), a lock its dead owner left. Yields the lock file's path.
    """
    folder = Path(folder)
    warn = warn or (lambda message: print(f"{command}: warning: {message}", file=sys.stderr))
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise fileio.write_error(folder, err) from None
    handle, previous = _acquire(path, command)
    try:
        if previous is not None:
            warn(f"{path}: taking over the lock of {previous.describe()}, which is no longer running")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: nobody can take the file between unlink and close
        handle.close()


def _acquire(path: Path, command: str):  # -> tuple[IO, Owner | None]
    """Open, lock and claim ``path``; the handle (keeps the flock) and the dead owner taken over, if any."""
    import fcntl

    me = _this_owner(command)
    for _ in range(10):  # another process may unlink the file between our open and our lock: retry
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as err:
            raise fileio.write_error(path, err) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            owner = _read_owner(path)
            handle.close()
            raise errors.FolderBusy(_busy_message(path, owner)) from None
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                handle.close()
                raise fileio.write_error(path, err) from None
            locked = False
        if locked and not _same_file(handle, path):  # unlinked by its previous owner meanwhile
            handle.close()
            continue
        handle.seek(0)
        previous = _read_owner(path) if handle.read().strip() else None
        if not locked and previous is not None and not previous.is_dead():
            handle.close()
            raise errors.FolderBusy(_busy_message(path, previous, flock=False))
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": me.pid, "host": me.host, "started": me.started, "command": me.command,
                                     "since": me.since}) + "\n")
            handle.flush()
        except OSError as err:
            handle.close()
            raise fileio.write_error(path, err) from None
        return handle, previous  # content left by an owner that ended without releasing it
    raise errors.FolderBusy(f"{path}: the lock changed hands 10 times while being taken; try again")


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _busy_message(path: Path, owner: Owner | None, flock: bool = True) -> str:
    folder = path.parent
    who = owner.describe() if owner is not None else "another process"
    message = f"{folder}: in use by {who}; wait for it to finish or stop it, then run again"
    if not flock:  # no flock here: a lock of another host cannot be checked, say how to remove it
        message += (f" (this file system cannot lock files: if that process is no longer running, "
                    f"`rm {shlex.quote(str(path))}`)")
    return message
