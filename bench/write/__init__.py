"""The write-path benchmark (docs/bench.md): `python -m bench.write [--quick|--smoke]`.

Phases, each on fresh topics named after a unique prefix: 1 processor (pre-produced commands
through `serve --no-api`; and decide+seal+encode alone, no Kafka), 2-3 raw aiokafka produce and
consume of the same records, 4 the `eventsourcing` library on PostgreSQL, 5 HTTP latency of
`serve` layouts driven open-loop, next to an echo endpoint's floor. It only reports: a missed
target never changes the exit status; a phase that breaks does (exit 1).
"""
