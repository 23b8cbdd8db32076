"""pf-ray: polite visual instruction tuning (Polite Flamingo / Clever Flamingo) on Ray."""

__version__ = "0.1.0"
