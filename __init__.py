"""fssbench: a benchmark harness and leaderboard evaluator for few-shot semantic segmentation."""

__version__ = "0.1.0"
