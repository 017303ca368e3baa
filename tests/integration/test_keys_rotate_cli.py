"""`runledger keys rotate` on real PostgreSQL: every data key rewrapped, readable under the new KEK alone."""
import asyncio
import base64
import os
import subprocess
import sys

from infra.adapters.keys import data_keys_table
from infra.adapters.keys.postgres import PostgresKeyStore
from infra.adapters.postgres import open_pool
from tests.support import REPO, Service, make_settings


async def test_rotation_rewraps_every_key_and_the_old_kek_is_then_not_needed():
    settings = make_settings()
    old = base64.b64decode(settings.kek.get_secret_value())
    new = os.urandom(32)
    pool = await open_pool(settings)
    try:
        table = data_keys_table(settings)
        before = await PostgresKeyStore(pool, {"kek-1": old}, "kek-1", table=table).open()
        keys = {s: await before.key_for("acme", s) for s in ("alice", "bob", "carol")}
        env = {**Service(settings).env(), "RUNLEDGER_NEW_KEK": base64.b64encode(new).decode()}
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "infra.entry.cli", "keys", "rotate",
                                                        "--new-kek-id", "kek-2", "--batch", "2"],
                                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("rewrapped 3 data keys under kek-2")
        after = PostgresKeyStore(pool, {"kek-2": new}, "kek-2", table=table)
        assert await after.kek_usage() == {"kek-2": 3}
        ids = [key_id for key_id, _ in keys.values()]
        assert {k: e.key for k, e in (await after.key_entries("acme", ids)).items()} == dict(keys.values())
        again = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "infra.entry.cli", "keys", "rotate",
                                                         "--new-kek-id", "kek-2"],
                                        cwd=REPO, env={**env, "RUNLEDGER_KEK": base64.b64encode(new).decode(),
                                                       "RUNLEDGER_KEK_ID": "kek-2"},
                                        capture_output=True, text=True, timeout=120)
        assert (again.returncode, again.stdout.split(";")[0]) == (0, "rewrapped 0 data keys under kek-2")
    finally:
        await pool.close()


async def test_rotation_without_a_new_kek_names_what_is_missing():
    settings = make_settings()
    env = {k: v for k, v in Service(settings).env().items() if k != "RUNLEDGER_NEW_KEK"}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "infra.entry.cli", "keys", "rotate",
                                                    "--new-kek-id", "kek-2"],
                                   cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr.strip()) == (
        1, "error: set RUNLEDGER_NEW_KEK to the new KEK (base64 of 32 bytes) in the environment")
