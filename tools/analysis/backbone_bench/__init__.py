"""Pieces of ``tools/analysis/benchmark_backbones.py``: the models (``zoo``), the measurements (``measure``,
``training``) and the report (``report``)."""
