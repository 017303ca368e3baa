"""infra/adapters/postgres.py caps psycopg_pool's reconnection backoff, which otherwise doubles without bound."""
import psycopg_pool.pool_async

from infra.adapters.postgres import CappedAttempt


def delays(attempt, tries: int) -> list[float]:
    out = []
    for i in range(tries):
        attempt.update_delay(100.0 + i)
        out.append(round(attempt.delay, 1))
    return out


def test_the_pools_reconnection_delays_stop_growing_at_two_seconds():
    capped = delays(CappedAttempt(timeout=300), 8)
    assert capped[0] <= 1.1 and max(capped) == CappedAttempt.MAX_DELAY_S and capped[-4:] == [2.0] * 4
    assert delays(psycopg_pool.base.AttemptWithBackoff(timeout=300), 8)[-1] > 60  # what the library does alone


def test_the_pool_module_builds_its_attempts_from_the_capped_class():
    assert psycopg_pool.pool_async.AttemptWithBackoff is CappedAttempt
