"""models (placeholder)."""
