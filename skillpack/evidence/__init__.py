"""Evidence: the article's claims measured by ablation (seeds, intervals, verdicts)."""
