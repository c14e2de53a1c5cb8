"""Transformer architectures as graphs of ops (:mod:`.graph`, :mod:`.archs`) and their
executors (:mod:`.float_exec`; a device executor is the next step)."""
