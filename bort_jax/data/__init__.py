"""data (placeholder)."""
