"""training (placeholder)."""
