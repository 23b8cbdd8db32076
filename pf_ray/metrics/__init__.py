"""ROUGE-L and other scores shared by filters, evaluation and the quickstart."""
