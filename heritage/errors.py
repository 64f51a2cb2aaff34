"""The project's expected errors and the command line's exit codes (one home for both).

An *expected* error is one a user can cause and fix: a wrong value in a config, a data folder that
does not exist, an image that cannot be read, a split manifest that no longer matches its data. Such
errors are raised as :class:`HeritageError` (or a subclass) with a message that names the file, row,
key or value and, where there is one, the way forward. ``python -m heritage`` prints them as one line
``heritage <command>: <message>`` and exits with the error's :attr:`~HeritageError.exit_code`;
anything else is a bug and keeps its traceback (see :mod:`heritage.cli`).

The subclasses also derive from the built-in type a caller would expect (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working in library code and notebooks.
This module imports nothing: every layer may raise these.
"""

from __future__ import annotations

# Exit codes of every ``python -m heritage`` command (documented in the README, "What happens with
# bad input").
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, but some of its work failed (e.g. a run of ``paper``)
EXIT_BAD_INPUT = 2  # an expected error: bad arguments, config, data or paths (argparse uses 2 too)
EXIT_BUG = 70  # an unexpected exception: a bug in heritage (sysexits' EX_SOFTWARE)
# The machine failed the command, not its input: a full disk or quota, a read-only file system, an I/O
# error, files removed while the command ran (sysexits' EX_IOERR). What was finished is kept; fix the
# machine and run the same command again.
EXIT_MACHINE = 74
EXIT_REQUEUE = 75  # training checkpointed on SIGTERM/SIGUSR1: run again to resume (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it

# Set to 1 to see the traceback of expected errors too (the same as ``--debug``).
DEBUG_ENVIRONMENT_VARIABLE = "HERITAGE_DEBUG"


class HeritageError(Exception):
    """An expected error: the message says what is wrong, where, and what to do."""

    exit_code = EXIT_BAD_INPUT


class InputError(HeritageError, ValueError):
    """A value in the user's data, configuration or arguments is wrong."""


class MissingInputError(HeritageError, FileNotFoundError):
    """A file or folder the command needs does not exist."""

    def __str__(self) -> str:  # FileNotFoundError(msg) would print "[Errno ...]" with two arguments
        return str(self.args[0]) if self.args else super().__str__()


class OutputError(HeritageError, OSError):
    """The place the command should write to cannot be used (exists as a file, not writable, ...)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class MachineError(HeritageError, OSError):
    """The machine failed the command: disk full, read-only file system, I/O error, data removed meanwhile.

    The message names the path and the fault (with the free space for a full disk) and says what was kept.
    """

    exit_code = EXIT_MACHINE

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class CommandFailed(HeritageError, RuntimeError):
    """The command ran but part of its work failed; the message says which part and where its log is."""

    exit_code = EXIT_FAILED


class FolderBusy(OutputError):
    """Another process holds the folder this command would write (:mod:`heritage.locks`); the message names it."""


class OutputExistsError(OutputError, FileExistsError):
    """The command would overwrite or mix into something that is already there."""
