"""Entry points: bootstrap (the one builder), the CLI, the demo, the HTTP client, the chain verifier."""
