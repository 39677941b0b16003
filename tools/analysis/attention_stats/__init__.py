"""Pieces of ``tools/analysis/attention_analysis.py``: row statistics of attention matrices (``row_stats``), the
forward hooks that capture the attention each layer applies (``capture``), the LaViT / all-VA and CB on / off
comparisons (``compare``), the plots (``plots``) and the CSV and text summaries (``report``)."""
