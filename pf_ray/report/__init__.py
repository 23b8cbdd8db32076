"""Dataset cards (``pf-ray report``): README.md + PNG plots from a dataset's files."""
