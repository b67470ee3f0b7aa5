"""What happened to customers, as recorded from ``safar.history`` (DESIGN §4)."""
