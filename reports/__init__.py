"""Human-readable views of results: run summaries, leaderboards, comparisons."""
