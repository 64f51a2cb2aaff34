"""The training stage: one configuration -> one run folder.

``engine`` is the loop (``fit``: ``train_one_epoch``, ``validate``, a ``Checkpointer``, stop requests);
``devices`` where a process runs (rank, device, autocast, memory); ``reproducibility`` the seeds and
RNG states; ``evaluation`` scores a model (whole images with the sliding window, and the seeds' letterboxed way);
``runs`` says what a run folder holds (file names, checkpoints, environment capture);
``provenance`` reads a finished run's record and makes its banner; ``train`` is the
``python -m heritage train`` command that ties config, data and engine together.
"""
