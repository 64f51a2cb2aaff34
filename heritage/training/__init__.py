"""The training stage: one configuration -> one run folder.

``engine`` is the loop (``fit``: ``train_one_epoch``, ``validate``, a ``Checkpointer``) and evaluation;
``runs`` says what a run folder holds (file names, checkpoints, environment capture);
``provenance`` reads a finished run's record and makes its banner; ``train`` is the
``python -m heritage train`` command that ties config, data and engine together.
"""
