"""Evaluation: the rewriter's reconstruction score today; politeness and understanding next."""
