"""The PF-1M filter chain (paper.md §5): ``kind: filter``, one module per filter."""
