"""Evaluation (paper.md §7): ``kind: eval`` (answer sources on the same items; reward win rates,
median rewards, ROUGE-L, NLI judge, STS; the paper's tables) and the quickstart's checks
(the rewriter's reconstruction ROUGE-L, fact recall, synthetic VQA accuracy)."""
