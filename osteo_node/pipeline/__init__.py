"""Analysis pipeline: select -> volume -> segment -> measure -> grade.

Stages are pure functions over the typed objects in :mod:`osteo_node.pipeline.types` and
:mod:`osteo_node.pipeline.results`; file and network I/O stay at the edges.
"""
