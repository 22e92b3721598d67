"""Reports rendered from stored results: leaderboards (markdown + CSV)."""
