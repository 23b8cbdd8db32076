"""The PF-1M filter chain (spec §5): ``kind: filter``, one module per filter."""
