"""The encoders' ImageNet weights in the Hugging Face cache: which file each encoder loads, whether it is
cached, fetching it ahead of time, and ``python -m heritage weights fetch|check``.

What :func:`heritage.modeling.models.build_model` loads with ``pretrained=True`` (read from timm 1.0.31 and
SMP 0.6.0, and checked against them by tests/test_pretrained_weights.py):

- timm encoders (SMP's ``tu-<name>.<tag>``): timm's pretrained config of ``<name>.<tag>`` names the Hub repo
  ``timm/<name>.<tag>``; with ``huggingface_hub`` installed timm prefers it to the config's old download
  URL, and asks for ``model.safetensors`` (the safetensors twin of its default ``pytorch_model.bin``).
  We resolve that one file in the cache and hand timm its path (``pretrained_cfg_overlay``), so building
  never touches the network.
- SMP's own encoders (``mit_b3``): SMP's ``pretrained_settings["imagenet"]`` names a Hub repo
  (``smp-hub/mit_b3.imagenet``) at a pinned revision, whose ``model.safetensors`` we load ourselves (SMP
  would also fetch its ``config.json``, which building a model does not read).

A login node with internet runs ``weights fetch`` once; compute nodes then find every file in the cache
(``HF_HOME``, shared or copied) and never ask the Hub, which they may not reach (set ``HF_HUB_OFFLINE=1``
there). Nothing here uses ``TORCH_HOME``.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Sequence

from heritage import errors
from heritage.modeling import registry

# Seconds the Hub check waits before reporting it unreachable (huggingface_hub itself would retry ~25 s).
HUB_TIMEOUT_S = 5.0
# The file timm prefers for a Hub repo without a filename of its own (its HF_SAFE_WEIGHTS_NAME), and
# the file SMP loads from its own repos.
SAFETENSORS_FILE = "model.safetensors"
FETCH_COMMAND = "python -m heritage weights fetch"


class PretrainedWeightsUnavailable(errors.HeritageError, RuntimeError):
    """ImageNet weights are neither in the local Hugging Face cache nor downloadable."""


@dataclass(frozen=True)
class WeightsFile:
    """One encoder's ImageNet weights: a file of a Hub repo at a revision (None: the repo's main branch)."""

    encoder: str
    repo_id: str
    filename: str
    revision: str | None = None

    @property
    def where(self) -> str:
        return f"{self.repo_id}{'@' + self.revision[:12] if self.revision else ''} {self.filename}"

    def cached_path(self) -> str | None:
        """The file's path in the Hugging Face cache, or None when it is not there (never asks the Hub)."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, self.filename, revision=self.revision)
        return found if isinstance(found, str) else None

    def download(self) -> str:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(self.repo_id, self.filename, revision=self.revision)


def weights_file(encoder: str) -> WeightsFile:
    """The file ``build_model(..., pretrained=True)`` loads for ``encoder`` (imports timm or SMP)."""
    spec = registry.encoder_spec(encoder)
    if spec.is_timm:
        import timm

        hub_id = timm.models.get_pretrained_cfg(spec.smp_name[len("tu-"):]).hf_hub_id
        repo_id, _, revision = hub_id.partition("@")  # timm's "repo@revision" form (its hf_split)
        return WeightsFile(encoder, repo_id, SAFETENSORS_FILE, revision or None)
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders[spec.smp_name]["pretrained_settings"]["imagenet"]
    return WeightsFile(encoder, settings["repo_id"], SAFETENSORS_FILE, settings["revision"])


def hub_problem() -> str | None:
    """Why the Hub cannot be asked now (``HF_HUB_OFFLINE``, or no answer within HUB_TIMEOUT_S), else None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = constants.ENDPOINT
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # an HTTP error status still proves the Hub answers
    except OSError as err:  # URLError, timeouts, refused connections, failed name resolution
        return f"{endpoint} unreachable: {getattr(err, 'reason', err)}"
    return None


def cache_folder() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def fetch_command(encoders: Iterable[str]) -> str:
    return f"{FETCH_COMMAND} --encoders {' '.join(encoders)}"


def missing(encoders: Iterable[str]) -> list[str]:
    """The encoders (in the order given, each once) whose weights are not in the cache."""
    return [encoder for encoder in dict.fromkeys(encoders) if weights_file(encoder).cached_path() is None]


def require_cached(encoders: Iterable[str], why: str) -> None:
    """Raise :class:`PretrainedWeightsUnavailable` naming every encoder whose weights are not cached and
    the command that fetches them; ``why`` says who needs them (e.g. "the plan's pretrained runs")."""
    absent = missing(encoders)
    if absent:
        raise PretrainedWeightsUnavailable(
            f"{why} need the ImageNet weights of {', '.join(absent)}, which are not in the Hugging Face cache "
            f"{cache_folder()}: fetch them where the Hub is reachable (a login node) with `{fetch_command(absent)}` "
            f"(the same HF_HOME as the jobs), or train from scratch with pretrained=false")


def require_pretrained_weights(encoder: str) -> str:
    """Path of ``encoder``'s ImageNet weights in the cache, downloading them when the Hub answers.

    A cached file is used without touching the network. Otherwise this fails at once under
    ``HF_HUB_OFFLINE=1``, and within HUB_TIMEOUT_S when the Hub cannot be reached, saying how to fill
    the cache.
    """
    weights = weights_file(encoder)
    cached = weights.cached_path()
    if cached is not None:
        return cached
    problem = hub_problem()
    if problem is None:
        return weights.download()
    revision_flag = f" --revision {weights.revision}" if weights.revision else ""
    raise PretrainedWeightsUnavailable(
        f"pretrained=True: ImageNet weights of encoder {encoder!r} ({weights.repo_id}, {weights.filename}) are not "
        f"in the Hugging Face cache {cache_folder()} and cannot be downloaded ({problem}). Fetch them where the "
        f"Hub is reachable (a login node): `{fetch_command([encoder])}` (or `hf download {weights.repo_id} "
        f"{weights.filename}{revision_flag}`), with the same HF_HOME as here, or copy its $HF_HOME/hub folder "
        f"(default ~/.cache/huggingface/hub) to $HF_HOME/hub here, and set HF_HUB_OFFLINE=1. TORCH_HOME is not "
        f"used: these weights load through the Hugging Face cache. Or train with pretrained=False."
    )


# -- python -m heritage weights fetch|check ----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("fetch", "check"),
                        help="fetch: download into the Hugging Face cache (run it where the Hub is reachable); "
                             "check: list what is cached (no network)")
    parser.add_argument("--encoders", nargs="+", default=list(registry.ENCODERS), metavar="ENCODER",
                        help=f"default: every encoder of the registry ({', '.join(registry.ENCODERS)})")


def main(args: argparse.Namespace) -> int:
    for encoder in args.encoders:
        registry.encoder_spec(encoder)  # an unknown name is refused before anything is looked up
    files = [weights_file(encoder) for encoder in dict.fromkeys(args.encoders)]
    if args.action == "fetch":
        fetch(files)
    return check(files)


def fetch(files: Sequence[WeightsFile]) -> None:
    """Download the files not yet cached; the Hub is asked only when one is missing."""
    absent = [weights for weights in files if weights.cached_path() is None]
    if not absent:
        return
    problem = hub_problem()
    if problem is not None:
        raise PretrainedWeightsUnavailable(
            f"cannot download the weights of {', '.join(w.encoder for w in absent)} ({problem}): run "
            f"`{fetch_command(w.encoder for w in absent)}` where the Hub is reachable (a login node), with the "
            f"HF_HOME the jobs use ({cache_folder()} here)")
    failed = []
    for weights in absent:
        print(f"{weights.encoder}: downloading {weights.where}", flush=True)
        try:
            weights.download()
        except Exception as err:  # noqa: BLE001 - huggingface_hub's HTTP and file errors: name them, go on
            failed.append(f"{weights.encoder} ({type(err).__name__}: {' '.join(str(err).split())[:200]})")
    if failed:
        raise errors.CommandFailed(f"could not download {'; '.join(failed)}")


def check(files: Sequence[WeightsFile]) -> int:
    """Print one line per encoder (cached with its path, or missing); exit 1 naming the missing ones."""
    absent = []
    for weights in files:
        path = weights.cached_path()
        state = "cached " if path is not None else "missing"
        print(f"{weights.encoder:<14} {state} {weights.where}" + (f"  {path}" if path else ""))
        if path is None:
            absent.append(weights.encoder)
    if absent:
        raise errors.CommandFailed(
            f"{len(absent)} of {len(files)} encoders' weights are not in the Hugging Face cache {cache_folder()}: "
            f"{', '.join(absent)}; fetch them with `{fetch_command(absent)}` where the Hub is reachable")
    print(f"all {len(files)} encoders' weights are in the Hugging Face cache {cache_folder()}")
    return 0
