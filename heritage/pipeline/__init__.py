"""The pipeline stage: the whole compendium as jobs.

``paper`` is the command: it prepares the data (``preparation``), plans POC x encoder x fold into
notebook jobs (``jobs``; a notebook's own configuration: ``run_configs``), executes them with
papermill (``execution``) locally (``schedulers``) or as SLURM jobs (``on_slurm``), and writes the
index (``index_page``); ``progress`` prints its progress lines; ``slurm`` is a generic SLURM
scheduler of named command lines that imports nothing of the pipeline.
"""
