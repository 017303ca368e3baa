"""The read side shows content fields (queries/content.py) from an in-memory key store, one key call per response."""
import copy
import json
import logging
from datetime import datetime, timezone
from typing import Iterable

from infra.adapters.keys import SHREDDED, Content
from infra.adapters.keys.cipher import b64url, unb64url
from infra.adapters.keys.memory import KeyRows, MemoryKeyStore
from infra.adapters.keys.port import DataKey
from infra.adapters.keys.stored import NO_KEK, NOT_STORED, UNREADABLE, column_text, recorded
from queries.content import ContentReader
from queries.discovery import Discovery
from queries.pagination import encode_cursor
from queries.readmodels import ReadModels

KEK = bytes(range(32))
TENANT = "acme"
AT = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
METADATA_ONLY, SUBJECT_SHREDDED = {"withheld": "metadata-only"}, {"withheld": "subject shredded"}


class CountingStore(MemoryKeyStore):
    """Records every batch of key ids asked for (`keys` goes through `key_entries` too)."""

    def __init__(self, rows: KeyRows | None = None, keks: dict[str, bytes] | None = None):
        super().__init__(keks or {"kek-1": KEK}, "kek-1", rows)
        self.calls: list[tuple[str, list[str]]] = []

    async def key_entries(self, tenant_id: str, key_ids: Iterable[str]) -> dict[str, DataKey]:
        ids = list(key_ids)
        self.calls.append((tenant_id, sorted(set(ids))))
        return await super().key_entries(tenant_id, ids)


async def sealed(store: MemoryKeyStore, subject: str, text: str, tenant: str = TENANT) -> dict[str, str]:
    return await Content(store).seal(tenant, subject, text)


def tampered(field: dict[str, str]) -> dict[str, str]:
    ct = bytearray(unb64url(field["ct"]))
    ct[-1] ^= 1
    return {**field, "ct": b64url(bytes(ct))}


async def test_a_sealed_field_reads_as_its_plaintext_until_its_subject_is_shredded():
    store = CountingStore()
    reader = ContentReader(Content(store))
    alice, bob = await sealed(store, "alice", "Alice's reason"), await sealed(store, "bob", "Bob's error")
    values = [(alice, False), (bob, False), (column_text(alice), False)]
    assert await reader.show(TENANT, values) == ["Alice's reason", "Bob's error", "Alice's reason"]
    await store.shred(TENANT, "alice")
    assert await reader.show(TENANT, values) == [SHREDDED, "Bob's error", SHREDDED]
    assert store.calls == [(TENANT, sorted([alice["kid"], bob["kid"]]))] * 2


async def test_withheld_markers_none_and_legacy_values_need_no_key_and_show_as_specified():
    store = CountingStore()
    reader = ContentReader(Content(store))
    values = [(METADATA_ONLY, False), (SUBJECT_SHREDDED, False), (column_text(METADATA_ONLY), False),
              (column_text(SUBJECT_SHREDDED), False), (None, False), (None, True), ("legacy reason", False),
              ('{"note": "a legacy text that is JSON"}', False), ("{not json", False), ({"team": "blue"}, True),
              ({}, True), (METADATA_ONLY, True), (SUBJECT_SHREDDED, True)]
    assert await reader.show(TENANT, values) == [
        NOT_STORED, SHREDDED, NOT_STORED, SHREDDED, None, None, "legacy reason",
        '{"note": "a legacy text that is JSON"}', "{not json", {"team": "blue"}, {}, NOT_STORED, SHREDDED]
    assert (store.calls, NOT_STORED, SHREDDED) == ([], "[not stored]", "[shredded]")


async def test_sealed_labels_read_as_their_object_and_as_a_placeholder_once_shredded():
    store = CountingStore()
    reader = ContentReader(Content(store))
    labels = await sealed(store, "agent-1", '{"env":"ci","team":"blue"}')
    assert await reader.show(TENANT, [(labels, True), (labels, False)]) == [
        {"env": "ci", "team": "blue"}, '{"env":"ci","team":"blue"}']
    await store.shred(TENANT, "agent-1")
    assert await reader.show(TENANT, [(labels, True)]) == [SHREDDED]


async def test_a_tampered_field_reads_unreadable_with_a_warning_and_spoils_no_other(caplog):
    store = CountingStore()
    reader = ContentReader(Content(store))
    good, bad = await sealed(store, "alice", "fine"), tampered(await sealed(store, "bob", "Bob's secret"))
    moved = await sealed(store, "carol", "carol's", tenant="other")  # another tenant's: its key is not ours
    alien = {"alg": "A128GCM", "kid": good["kid"], "iv": good["iv"], "ct": good["ct"]}
    with caplog.at_level(logging.WARNING, logger="runledger.content"):
        shown = await reader.show(TENANT, [(good, False), (bad, False), (column_text(bad), True), (moved, False),
                                           (alien, False)])
    assert shown == ["fine", UNREADABLE, UNREADABLE, SHREDDED, UNREADABLE]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [(f"tenant {TENANT}" in m, bad["kid"] in m, UNREADABLE in m) for m in warnings[:2]] == [
        (True, True, True)] * 2
    assert ("alg 'A128GCM'" in warnings[2], len(warnings), "Bob's secret" in caplog.text) == (True, 3, False)
    assert store.calls == [(TENANT, sorted([good["kid"], bad["kid"], moved["kid"]]))]


async def test_without_a_kek_sealed_fields_say_so_and_the_rest_reads_as_ever():
    store = CountingStore()
    field = await sealed(store, "alice", "secret")
    shown = await ContentReader(None).show(TENANT, [(field, False), (field, True), (METADATA_ONLY, False),
                                                    ("legacy", False), (None, False)])
    assert shown == [NO_KEK, NO_KEK, NOT_STORED, "legacy", None]
    assert (NO_KEK, store.calls) == ("[unreadable: no key-encryption key configured]", [])


async def test_keys_the_kek_cannot_unwrap_read_unreadable_and_are_logged_never_shown_shredded(caplog):
    rows = KeyRows()
    field = await sealed(CountingStore(rows), "alice", "secret")
    wrong = CountingStore(rows, {"kek-1": bytes(range(1, 33))})
    with caplog.at_level(logging.ERROR, logger="runledger.content"):
        shown = await ContentReader(Content(wrong)).show(TENANT, [(field, False), (METADATA_ONLY, False)])
    assert shown == [UNREADABLE, NOT_STORED]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [(f"tenant {TENANT}" in m, field["kid"] in m) for m in errors] == [(True, True)]


def test_text_columns_keep_objects_as_compact_json_and_read_them_back():
    field = {"alg": "A256GCM", "kid": "dk_1", "iv": "aXY", "ct": "Y3Q"}
    assert column_text(field) == '{"alg":"A256GCM","ct":"Y3Q","iv":"aXY","kid":"dk_1"}'
    assert column_text(METADATA_ONLY) == '{"withheld":"metadata-only"}'
    assert [column_text(v) for v in ("plain", None)] == ["plain", None]
    assert [recorded(column_text(v)) for v in (field, METADATA_ONLY, "plain", None)] == [
        field, METADATA_ONLY, "plain", None]
    assert recorded('{"a": 1}') == '{"a": 1}'


# -- ReadModels and Discovery: what a response shows, with one key call for all of it ---------------

class CannedModels(ReadModels):
    """ReadModels over canned rows by table (the SQL is PostgreSQL's, tested in tests/integration)."""

    def __init__(self, tables: dict[str, list[dict]], content: Content | None):
        super().__init__(None, "unit", content)
        self.tables = tables

    async def fetch(self, name: str, sql: str, params: tuple) -> list[dict]:
        table = sql.split("{s}.", 1)[1].split()[0]
        return copy.deepcopy(self.tables[table])


async def test_a_run_shows_every_content_field_opened_with_one_key_call():
    store = CountingStore()
    labels, error = await sealed(store, "agent-1", '{"env":"ci"}'), await sealed(store, "agent-1", "gave up")
    step_error, reason = await sealed(store, "agent-1", "disk full"), await sealed(store, "policy-engine", "risky")
    run = {"run_id": "r1", "labels": labels, "error": column_text(error), "requested_at": AT}
    legacy = {"run_id": "r0", "labels": {"team": "blue"}, "error": "plain", "requested_at": AT}
    tables = {"runs": [run, legacy], "steps": [{"step_id": "s1", "error": column_text(step_error)},
                                               {"step_id": "s2", "error": None}],
              "tool_calls": [{"tool_call_id": "c1", "decision_reason": column_text(reason),
                              "error": column_text(reason)},
                             {"tool_call_id": "c2", "decision_reason": column_text(METADATA_ONLY), "error": None}]}
    models = CannedModels(tables, Content(store))
    assert await models.get_run(TENANT, "r1") == {
        "run_id": "r1", "labels": {"env": "ci"}, "error": "gave up", "requested_at": AT,
        "steps": [{"step_id": "s1", "error": "disk full"}, {"step_id": "s2", "error": None}],
        "tool_calls": [{"tool_call_id": "c1", "decision_reason": "risky", "error": "risky"},
                       {"tool_call_id": "c2", "decision_reason": NOT_STORED, "error": None}]}
    assert store.calls == [(TENANT, sorted({labels["kid"], reason["kid"]}))]
    await store.shred(TENANT, "agent-1")
    page = await models.list_runs(TENANT, None, None, None, None, None, 1)
    assert page == {"items": [{"run_id": "r1", "labels": SHREDDED, "error": SHREDDED, "requested_at": AT}],
                    "next_cursor": encode_cursor([AT.isoformat(), "r1"])}
    assert (len(store.calls), store.calls[1]) == (2, (TENANT, [labels["kid"]]))
    tables["runs"] = [legacy]
    assert (await models.list_runs(TENANT, None, None, None, None, None, 5))["items"] == [legacy]
    assert len(store.calls) == 2


async def test_approvals_show_their_action_and_reasons_with_one_key_call_per_response():
    store = CountingStore()
    action, vote = await sealed(store, "agent-1", "deploy to prod"), await sealed(store, "ann", "fine by me")
    denial = await sealed(store, "bob", "not today")
    approval = {"tenant_id": TENANT, "approval_id": "a1", "action": column_text(action),
                "decision_reason": column_text(denial), "last_chain_seq": 9, "requested_at": None}
    tables = {"approvals": [approval], "approval_votes": [
        {"approver": "ann", "reason": column_text(vote)}, {"approver": "bob", "reason": column_text(SUBJECT_SHREDDED)},
        {"approver": "cy", "reason": "legacy vote"}, {"approver": "di", "reason": None}]}
    models = CannedModels(tables, Content(store))
    assert await models.get_approval(TENANT, "a1") == {
        "approval_id": "a1", "action": "deploy to prod", "decision_reason": "not today", "requested_at": None,
        "votes": [{"approver": "ann", "reason": "fine by me"}, {"approver": "bob", "reason": SHREDDED},
                  {"approver": "cy", "reason": "legacy vote"}, {"approver": "di", "reason": None}]}
    await store.shred(TENANT, "bob")
    assert await models.approval_queue(TENANT, None, None, 10) == {"items": [{
        "approval_id": "a1", "action": "deploy to prod", "decision_reason": SHREDDED, "requested_at": None}],
        "next_cursor": None}
    assert store.calls == [(TENANT, sorted([action["kid"], vote["kid"], denial["kid"]])),
                           (TENANT, sorted([action["kid"], denial["kid"]]))]


class CannedDiscovery(Discovery):
    def __init__(self, rows: list[dict], content: Content | None):
        super().__init__(None, None, content)
        self.rows = rows

    async def query(self, projection, sql: str, params: dict) -> list[dict]:
        return copy.deepcopy(self.rows[:params["limit"]])


async def test_audit_search_keeps_each_payload_as_stored_and_opens_its_content_beside_it():
    store = CountingStore()
    labels, reason = await sealed(store, "agent-1", '{"env":"ci"}'), await sealed(store, "policy-engine", "risky")
    payloads = [{"agent_id": "a", "labels": labels, "budget_micros": None},
                {"decision": "DENY", "reason": reason, "policy_id": "p"},
                {"tool": "shell", "reason": tampered(reason)},
                {"error": METADATA_ONLY, "step_id": "s"}, {"reason": "legacy", "labels": {"team": "blue"}}, {}]
    rows = [{"chain_seq": 9 - n, "payload": json.dumps(p, separators=(",", ":"))} for n, p in enumerate(payloads)]
    found = await CannedDiscovery(rows, Content(store)).search(TENANT, {}, None, None, None, 5)
    assert [(item["chain_seq"], item["payload"], item["content"]) for item in found["items"]] == [
        (9, payloads[0], {"labels": {"env": "ci"}}), (8, payloads[1], {"reason": "risky"}),
        (7, payloads[2], {"reason": UNREADABLE}), (6, payloads[3], {"error": NOT_STORED}), (5, payloads[4], {})]
    assert store.calls == [(TENANT, sorted({labels["kid"], reason["kid"]}))]
    unread = await CannedDiscovery(rows, None).search(TENANT, {}, None, None, None, 2)
    assert [item["content"] for item in unread["items"]] == [{"labels": NO_KEK}, {"reason": NO_KEK}]
