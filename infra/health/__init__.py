"""Health of a process, per role: liveness, readiness and the detailed report (docs/operations.md, Health)."""
