"""runledger benchmarks, run from the repo root: `python -m bench.write|read|streams` (bench/run.sh wraps them).

bench.lib is what they share: the report table and its too-short rule, one CPU/RSS meter, one
percentile, child processes, the local stack. Each benchmark is a package with a module per phase.
"""
