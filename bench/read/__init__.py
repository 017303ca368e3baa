"""The read-path benchmark (docs/bench-read.md): `python -m bench.read [--quick|--smoke]`.

Projector catch-up, rebuild and steady-state lag against one broker, one PostgreSQL and chdb
(opened once in this process), on a fresh topic set named after a unique prefix. Measured through
the product's own hooks: ProjectorRunner.on_applied (each stored poll) and the ClickHouse
adapter's on_statement (each chdb statement); nothing of the product is wrapped or replaced.
"""
