"""``python -m heritage``: one entry point, each command implemented by its own module.

A command module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Modules are imported
only when their command runs (or its ``--help`` is asked for), so ``--help`` stays fast.

Errors: a :class:`heritage.errors.HeritageError` is printed as one line ``heritage <command>: <message>``
and the command exits with its code (2 for bad input, 1 for failed work); any other exception is a
bug, printed with its traceback and exit code 70. ``--debug`` (anywhere on the command line) or
``HERITAGE_DEBUG=1`` prints the traceback of expected errors too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from heritage import errors

# command -> (module, one-line help)
DATA_COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("heritage.data.synthetic", "generate the synthetic ARTeFACT stand-in as HF parquet shards"),
    "ingest": ("heritage.data.ingest", "HF parquet shards or an exported folder -> a data folder"),
    "augment": ("heritage.data.augment", "offline 3x augmentation (hflip, vflip, rotation)"),
    "split": ("heritage.data.splits", "write split manifests (holdout, kfold, loco, lomo)"),
    "weights": ("heritage.data.weights", "class weights from a training split"),
    "stats": ("heritage.data.stats", "class pixel shares and material/content counts of a data folder"),
}
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("heritage.training.train", "train one configuration into a run folder"),
    "paper": ("heritage.pipeline.paper", "run the whole compendium: POC notebooks, comparison, paper/"),
    "predict": ("heritage.inference.predict", "damage maps for whole artworks (tiled inference)"),
    "weights": ("heritage.modeling.pretrained_weights",
                "the encoders' ImageNet weights: fetch them into the Hugging Face cache, or check what is cached"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m heritage", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = commands.add_parser("data", help="build and inspect datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="STEP")
    wanted = _wanted(argv)
    for table, subparsers in ((DATA_COMMANDS, data_commands), (COMMANDS, commands)):
        for name, (module_name, help_text) in table.items():
            sub = subparsers.add_parser(name, help=help_text, description=help_text)
            sub.set_defaults(module=module_name)
            if name in wanted:  # import only the module the user asked for
                importlib.import_module(module_name).add_arguments(sub)
    return parser


def _wanted(argv: list[str]) -> set[str]:
    words = [a for a in argv if not a.startswith("-")]
    return set(words[:2])


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected errors become one line and an exit code, bugs keep their traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(errors.DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    args = build_parser(argv).parse_args(argv)
    command = _command_name(args)
    try:
        module = importlib.import_module(args.module)
        return int(module.main(args) or 0)
    except errors.HeritageError as err:
        if debug:
            traceback.print_exc()
        print(f"heritage {command}: {one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"heritage {command}: interrupted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the one place a bug is reported as one
        traceback.print_exc()
        print(f"heritage {command}: internal error ({type(err).__name__}): this is a bug in heritage; "
              f"please report it with the traceback above", file=sys.stderr)
        return errors.EXIT_BUG


def one_line(message: str) -> str:
    """``message`` on one line (some carry a library's multi-line text, e.g. a YAML parser's)."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _command_name(args: argparse.Namespace) -> str:
    return f"data {args.data_command}" if args.command == "data" else args.command
