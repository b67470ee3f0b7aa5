"""The pure engine: (profile, event, definitions, now) -> effects, with no Kafka or Redis.

The orchestrator runs it; the api compiles definitions and dry-runs rules with it, so what
the api accepts is exactly what the orchestrator can run.
"""
