"""Journey and rule analytics over the recorded history (docs/analytics.md)."""
