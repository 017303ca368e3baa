"""Content fields (free text: reasons, errors, labels, approval actions) never reach the log in clear.

A tenant stores no content by default (metadata-only): a content field is recorded as the
WITHHELD marker. A tenant that opts in (SetContentPolicy) has each field sealed with its author's
data key (AES-GCM, infra/adapters/keys, docs/adr/0008) before the event is hashed, so the hash
covers the ciphertext and key id, and shredding the key later leaves every chain verifiable.

The domain stays pure: the processor fetches the data keys a batch needs before deciding it and
hands them in as a `Sealer`; deciding never waits on I/O.
"""
import json
from typing import Any, Callable

from domain.errors import DomainError

# A content field as recorded: a sealed field or a withheld marker (plain text in logs from before).
Content = str | dict[str, str]
WITHHELD = {"withheld": "metadata-only"}
WITHHELD_SHREDDED = {"withheld": "subject shredded"}
# Commands whose events carry content (the processor fetches their author's data key first).
CONTENT_COMMANDS = frozenset({"RequestRun", "FinishStep", "FailRun", "CancelRun", "ResumeRun", "ForceFailRun",
                              "DecidePolicy", "FailToolCall", "RequestApproval", "GrantApproval", "DenyApproval"})


class KeyRing:
    """The data keys fetched for one batch, by subject, and the sealing function that uses them."""

    def __init__(self, tenant_id: str, keys: dict[str, tuple[str, bytes]],
                 seal: Callable[[str, str, str, bytes, bytes], dict[str, str]],
                 aad: Callable[[str, str, str], bytes]):
        self.tenant_id, self.keys, self._seal, self._aad = tenant_id, keys, seal, aad
        self.revoked: set[str] = set()
        self.shreddable: dict[str, list[str]] = {}  # the key ids of each subject a ShredSubject names

    def seal(self, subject: str, plaintext: str) -> dict[str, str] | None:
        if subject in self.revoked or subject not in self.keys:
            return None
        key_id, key = self.keys[subject]
        return self._seal(plaintext, key_id, key, self._aad(self.tenant_id, subject, key_id))

    def revoke(self, subject: str) -> None:
        """A shred decided in this batch: the key fetched before it must seal nothing after it."""
        self.revoked.add(subject)


class ContentUnavailable(DomainError):
    code = "content_storage_unavailable"


def record(text: str | None, store: bool, subject: str, sealer: KeyRing | None) -> Any:
    """What the log records for one content field: nothing, the withheld marker, or the sealed text."""
    if text is None:
        return None
    if not store:
        return dict(WITHHELD)
    if sealer is not None and subject in sealer.revoked:
        return dict(WITHHELD_SHREDDED)
    sealed = sealer.seal(subject, text) if sealer is not None else None
    if sealed is None:
        raise ContentUnavailable("this tenant stores content, but no data key could be had for "
                                 f"{subject!r} (is RUNLEDGER_KEK set for the processor?); nothing was appended")
    return sealed


def labels_text(labels: dict[str, str]) -> str:
    """Labels are sealed as one canonical JSON text."""
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
