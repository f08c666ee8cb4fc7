"""Re-ranking: filters and selectors applied to the ranked list."""
