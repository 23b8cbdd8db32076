"""Staged tuning on Ray Train: rewriter SFT and Clever Flamingo's U-shaped three stages."""
