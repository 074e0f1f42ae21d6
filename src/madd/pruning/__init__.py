"""Pruning primitives on torch-pruning's dependency graph: which channels go together (:mod:`~madd.pruning.groups`)
and their physical removal, or the rebuilding of a pruned network's shapes from its tensors
(:mod:`~madd.pruning.physical`). Below both :mod:`madd.compression` (the pruning methods, as callbacks) and
:mod:`madd.checkpoint` (which rebuilds pruned networks when it loads them)."""
