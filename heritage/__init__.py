"""heritage: semantic segmentation of damage in heritage artworks (ARTeFACT compendium)."""

__version__ = "0.1.0"
