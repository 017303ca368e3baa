"""Crypto-shredding: per-subject data keys wrapped under a KEK, and sealed content fields (docs/adr/0008)."""
import re
from typing import TYPE_CHECKING

from infra.adapters.keys.cipher import (ALG, SHREDDED, KeyUnwrapError, NotSealed, SealError, SealTampered,
                                        content_aad, is_sealed, open_sealed, seal)
from infra.adapters.keys.port import Content, DataKey, KeyStore, KeyStoreError, UnknownKek

if TYPE_CHECKING:
    from infra.adapters.settings import Settings


def data_keys_table(settings: "Settings") -> str:
    """The deployment's key table: one per topic prefix, as every other store of a deployment is."""
    name = re.sub(r"[^a-z0-9_]", "_", settings.topic_prefix.lower())[:38] + "_data_keys"
    return name if name[0].isalpha() or name[0] == "_" else "_" + name


def keks_from_settings(settings: "Settings") -> tuple[dict[str, bytes], str] | None:
    """Return ({kek_id: kek}, current kek id) from RUNLEDGER_KEK(_ID) and RUNLEDGER_PREVIOUS_KEKS; None if no KEK."""
    from infra.adapters.settings import kek_bytes  # here, so the cipher never pulls in the settings' imports
    if settings.kek is None:
        return None
    keks = {kek_id: kek_bytes(f"RUNLEDGER_PREVIOUS_KEKS[{kek_id!r}]", kek)
            for kek_id, kek in settings.previous_keks.items()}
    keks[settings.kek_id] = kek_bytes("RUNLEDGER_KEK", settings.kek)
    return keks, settings.kek_id


__all__ = ["ALG", "SHREDDED", "Content", "data_keys_table", "DataKey", "KeyStore", "KeyStoreError", "KeyUnwrapError", "NotSealed",
           "SealError", "SealTampered", "UnknownKek", "content_aad", "is_sealed", "keks_from_settings", "open_sealed", "seal"]
