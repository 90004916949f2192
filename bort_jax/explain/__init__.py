"""explain (placeholder)."""
