"""The runtime: supervised plugin actors, the reconciler, the watcher and ``voxbridge run``."""
