"""The recorder: a consumer group on ``safar.history`` writing PostgreSQL (DESIGN §2)."""
