"""`runledger keys rotate`: rewrap every content data key under a new KEK, batch by batch, with progress.

The procedure (docs/adr/0008): make a new KEK; run this with the current KEK as RUNLEDGER_KEK and
the new one as RUNLEDGER_NEW_KEK (never on the command line); then deploy with the new KEK as
RUNLEDGER_KEK (its id as RUNLEDGER_KEK_ID) and the old one in RUNLEDGER_PREVIOUS_KEKS until this
reports no row left under it; then drop the old KEK. Stopping anywhere is safe: each row names
the KEK that wraps it, and running this again carries on.
"""
import os

from pydantic import SecretStr
from tqdm import tqdm

from infra.adapters.keys import data_keys_table, keks_from_settings
from infra.adapters.keys.postgres import PostgresKeyStore
from infra.adapters.postgres import open_pool
from infra.adapters.settings import Settings, kek_bytes


class RotationRefused(Exception):
    pass


async def rotate(settings: Settings, new_kek_id: str, batch: int, progress: bool) -> str:
    keks = keks_from_settings(settings)
    if keks is None:
        raise RotationRefused("RUNLEDGER_KEK is not set: there is no current KEK to rotate from")
    if "RUNLEDGER_NEW_KEK" not in os.environ:
        raise RotationRefused("set RUNLEDGER_NEW_KEK to the new KEK (base64 of 32 bytes) in the environment")
    new_kek = kek_bytes("RUNLEDGER_NEW_KEK", SecretStr(os.environ["RUNLEDGER_NEW_KEK"]))
    if new_kek_id in keks[0] and keks[0][new_kek_id] != new_kek:
        raise RotationRefused(f"KEK id {new_kek_id!r} already names another KEK; give the new KEK a new id")
    pool = await open_pool(settings, max_size=2)
    try:
        store = await PostgresKeyStore(pool, *keks, table=data_keys_table(settings)).open()
        usage = await store.kek_usage()
        todo = sum(n for kek_id, n in usage.items() if kek_id != new_kek_id)
        done = 0
        with tqdm(total=todo, unit="key", desc=f"rewrapping under {new_kek_id}", disable=not progress) as bar:
            while rewrapped := await store.rotate_kek(new_kek, new_kek_id, batch_size=batch, limit=batch):
                done += rewrapped
                bar.update(rewrapped)
        left = {k: n for k, n in (await store.kek_usage()).items() if k != new_kek_id}
    finally:
        await pool.close()
    if left:
        raise RotationRefused(f"rewrapped {done} keys, but rows remain under {left}: run it again")
    return (f"rewrapped {done} data keys under {new_kek_id}; now deploy RUNLEDGER_KEK=<the new KEK>, "
            f"RUNLEDGER_KEK_ID={new_kek_id}; no row is left under any other KEK")
