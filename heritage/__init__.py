"""heritage: semantic segmentation of damage in heritage artworks (ARTeFACT compendium)."""

import warnings

__version__ = "0.1.0"

# huggingface_hub (imported by albumentations, timm, SMP) imports tqdm.auto, which warns in a Jupyter
# kernel without ipywidgets: the warning was printed into every run report. Its text bars are enough.
warnings.filterwarnings("ignore", message="IProgress not found")
