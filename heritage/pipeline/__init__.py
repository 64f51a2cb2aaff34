"""The pipeline stage: the whole compendium as jobs.

``paper`` plans POC x encoder x fold, prepares the data, executes the notebooks with papermill
(locally or as SLURM jobs), renders their HTML and the index; ``progress`` prints its progress lines;
``slurm`` is a generic SLURM scheduler of named command lines that imports nothing of the pipeline.
"""
