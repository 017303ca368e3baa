"""The Kafka client benchmark (docs/bench-kafka.md): `python -m bench.kafka [--quick|--smoke]`.

The processor's transactional path (consume a batch of commands, produce one event and one reply
per command to two topics, send the consumed offsets to the transaction, commit) run with
aiokafka and with confluent-kafka (librdkafka) side by side at several batch sizes, next to raw
non-transactional produce with each. `python -m bench.kafka.broker` profiles a broker of its own
under `runledger serve`: fetch requests per second per client, broker CPU, JFR hot methods.
"""
