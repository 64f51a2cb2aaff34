"""What a process heritage starts sets for itself: the environment of the CLI, the notebook kernels and
their SLURM jobs.

Set by the entry points (``python -m heritage``, the project kernel's spec, the tests' conftest), never on
import: a library imported into someone else's program leaves their process alone.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

QUIET_ENVIRONMENT: dict[str, str] = {
    # albumentations asks PyPI for a newer version when imported; compute nodes are offline.
    "NO_ALBUMENTATIONS_UPDATE": "1",
    # huggingface_hub (imported by albumentations, timm, SMP) imports tqdm.auto, which warns in a Jupyter
    # kernel without ipywidgets: the warning was printed into every run report. Its text bars are enough.
    "PYTHONWARNINGS": "ignore:IProgress not found",
}


def quieten(environ: MutableMapping[str, str] = os.environ) -> None:
    """Add :data:`QUIET_ENVIRONMENT` to ``environ`` where the user has not set those variables."""
    for name, value in QUIET_ENVIRONMENT.items():
        environ.setdefault(name, value)
