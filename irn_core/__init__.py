"""irn_core: the IRNet library (Ahn, Cho, Kwak, CVPR 2019).

Pure, typed, device-agnostic functions plus thin per-shard entry points
(:mod:`irn_core.steps`, :mod:`irn_core.cli`) that the Snakemake rules call.
Importing this package has no side effects.
"""

__version__ = "0.1.0"
