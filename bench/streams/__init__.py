"""The SSE streams benchmark (docs/bench-streams.md): `python -m bench.streams [--quick|--smoke]`.

It starts `runledger serve` (its own topic prefix, JWT secret, port and chdb directory) and
measures 1. fan-out: N subscribers of one tenant's stream, in client processes, while commands are
POSTed open-loop; delivery latency = receipt − recorded_at, every id exactly once and in order;
2. replay: one subscriber from Last-Event-ID 0 through a prefilled chain. It only reports; it
exits 1 only if something breaks (the server dies, a command is refused, a gap or a duplicate).
"""
