"""The data stage: everything about ARTeFACT's images and masks before a model sees them.

The class taxonomy and the dataset's reference facts, the data folder (``datafolder``) and how it is
made (``ingest`` of HF parquet shards or an exported folder, each row read by ``decoding``,
``augment``, split manifests in ``splits``, class
``weights``, ``stats`` and ``scale`` of damage components), the synthetic stand-in that tests and the
default paper use (``synthetic``), and the torch datasets and loaders over a data folder
(``datasets``). Nothing here knows of models, runs or the pipeline; modules are imported by name
(``from heritage.data import splits``), so this file imports nothing.
"""
