"""The console benchmark (docs/console.md, *Measured*): `python -m bench.console [--quick|--smoke]`.

It starts `runledger serve` as the streams benchmark does (bench/streams/server.py) and opens the console
in headless Chromium (bench/console/browser.py, shared with tests/e2e/test_console.py). In one run it
measures, first on an idle server, then under the streams benchmark's load (N subscribers of one tenant's
stream in client processes, RequestRun commands open-loop at a rate: bench/streams/fanout.py and worker.py):
time to first render (a reload of the signed-in approval center until the queue shows its cards), click to
live update (Confirm approval until the card leaves the queue, and until the run's timeline shows the grant),
and command to live update (a StartStep POSTed to a run until its row is in the open timeline).
It only reports; it exits 1 only if something breaks.
"""
