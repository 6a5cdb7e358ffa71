"""Inter-pixel relations of IRNet: path index, affinities from class boundaries, pair labels, losses.

Modules: :mod:`~irn_core.relations.path_index` (directions and paths for a radius),
:mod:`~irn_core.relations.affinity` (boundary → affinity), :mod:`~irn_core.relations.pair_labels`
(training pairs from a label map), :mod:`~irn_core.relations.losses` (IRNet's training losses).
The random walk lives in :mod:`irn_core.random_walk`, the pseudo labels in
:mod:`irn_core.pseudo_labels`.
"""
