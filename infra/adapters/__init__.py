"""Adapters: Kafka, the event-log port, PostgreSQL, ClickHouse, HTTP plumbing, telemetry, settings."""
