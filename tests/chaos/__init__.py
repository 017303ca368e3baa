"""The project's own chaos test, in parts: the roles it runs, the load, the SSE followers, the faults, the judge."""
