"""Store a poll tenant by tenant: what one tenant's event cannot become holds that tenant, not the projector.

Every record is checked against its tenant's head first (decodes, known type, continues the
chain); a record that fails holds its tenant at that record. The rest of the poll is stored in one
apply, with the new holds beside the rows and positions. If that apply fails with an error that
comes from the rows themselves (NUL in a text column, a value out of range), each tenant's events
are probed where nothing is kept, the first one that fails holds its tenant, and the others are
stored. An error of the store (a database down, a missing table) is raised for the caller to retry
everyone. A held tenant's later events are passed over, its position in the partition moves on,
and resume() replays them from the held record once the cause is fixed.

The one record that can hold no tenant is one that names none (no key and no envelope): the caller
stops the whole projector there (ProjectionHalted), as nothing can say whose chain it breaks.
"""
from dataclasses import dataclass, field, replace
from typing import AsyncIterable


from domain.registry import EVENT_CLASSES, schema_version_of
from infra.adapters.eventlog import Record
from projectors.base import Batch, CatchUp, Envelope, Hold, Projection
from schemas.chain import ChainVerifier
from schemas.envelope import decode

JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
RESUME_CHUNK = 2000


class ProjectionHalted(Exception):
    """A record names no tenant; the reason names it (partition, offset) and why."""


def decoded(value: bytes | None) -> tuple[Envelope, str | None]:
    """Return the envelope a record value holds, or why it holds none (which no retry can change)."""
    if value is None:
        return {}, "the record has no value (a tombstone)"
    try:
        env = decode(value)
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, a number too long, nested too deep
        return {}, f"the value is not JSON ({error})"
    if not isinstance(env, dict):
        return {}, f"the value is {JSON_KINDS.get(type(env), 'null')}, not an envelope object"
    if not isinstance(env.get("tenant_id"), str):
        return {}, f"the envelope's tenant_id is {env.get('tenant_id')!r}, not a string"
    return env, None


def read(record: Record) -> tuple[Envelope, str | None, str | None]:
    """The record's envelope, why it holds none, and its tenant: the envelope's, else the record key's."""
    env, problem = decoded(record.value)
    key_tenant = record.key.decode(errors="replace") if record.key else None
    return env, problem, env.get("tenant_id") if not problem else key_tenant


def place(partition: int, record: Record, key: bool = False) -> str:
    """Name a record's position in the log, and (key=True) the tenant its key names, if it has one."""
    where = f"partition {partition} offset {record.offset}"
    return f"{where}, tenant {record.key.decode(errors='replace')!r} (record key)" if key and record.key else where


def problem_of(env: Envelope, verifier: ChainVerifier) -> str | None:
    """Why env cannot follow verifier's head, or None. The checks are pure: what they raise, they always will."""
    try:
        return readable_problem(env) or verifier.problem_with(env)
    except (ValueError, TypeError, RecursionError) as error:  # e.g. RFC 8785 refuses NaN or an integer beyond 2^53
        return f"the envelope cannot be checked ({error!r})"


def readable_problem(env: Envelope) -> str | None:
    cls = EVENT_CLASSES.get(env.get("type"))
    if cls is None:
        return f"unknown event type {env.get('type')!r}"
    version = env.get("schema_version", 0)
    if type(version) is not int:
        return f"schema_version {version!r} is not an integer"
    if version > schema_version_of(cls):
        return f"{env['type']} schema_version {version} is newer than this code reads"
    return None


@dataclass
class Poll:
    """What admission made of a poll: batches to store, new holds, and where each admitted event came from."""
    batches: list[Batch]
    holds: dict[str, Hold] = field(default_factory=dict)
    heads: dict[str, ChainVerifier] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    passed: dict[int, set[str]] = field(default_factory=dict)  # per partition, the held tenants passed over
    resuming: str | None = None  # the held tenant this poll catches up, whose records are admitted

    def without(self, culprits: dict[str, Hold]) -> list[Batch]:
        """The batches minus each culprit tenant's events from its held chain_seq on."""
        def kept(env: Envelope) -> bool:
            hold = culprits.get(env["tenant_id"])
            return hold is None or env["chain_seq"] < hold.chain_seq
        return [replace(b, envelopes=[e for e in b.envelopes if kept(e)]) for b in self.batches]


def releasing(tenant: str | None, poll: Poll) -> str | None:
    """The tenant to release with this poll, unless the poll holds it again."""
    return tenant if tenant not in poll.holds else None


def resume_poll(hold: Hold, head_seq: int, until: int | None) -> Poll:
    """An empty poll for a held tenant's catch-up: its events are behind the partition's position.

    Its batch names what it stands on (CatchUp): a store shared by several processes refuses it if another
    one resumed the tenant or stored its partition past `until` meanwhile."""
    return Poll([Batch(hold.partition, [], None, catch_up=CatchUp(hold, head_seq, until))], resuming=hold.tenant_id)


class Admission:
    """Chain heads and holds of one projection, as its writer (the runner or a rebuild) sees them."""

    def __init__(self, projection: Projection, from_store: bool = True):
        self.projection = projection
        self.from_store = from_store  # a rebuild starts every chain at genesis
        self.verifiers: dict[str, ChainVerifier] = {}
        self.held: dict[str, Hold] = {}

    async def load(self) -> None:
        self.verifiers.clear()
        self.held = await self.projection.holds() if self.from_store else {}

    async def store(self, polled: list[tuple[int, list[Record], int | None]]) -> int:
        """Admit and store a poll (partition, records, next offset); return how many events were stored."""
        poll = Poll([])
        for partition, records, next_offset in polled:
            envelopes = [env for r in records if (env := await self.admitted(partition, r, poll))]
            poll.batches.append(Batch(partition, envelopes, next_offset, records[0].offset if records else None,
                                      frozenset(poll.passed.get(partition, ()))))
        return await self.settle(poll)

    async def settle(self, poll: Poll, released: str | None = None) -> int:
        """Store an admitted poll, holding whichever tenant the store refuses; return how many events it stored."""
        batches = await self.apply(poll, released)
        for tenant in poll.holds:
            poll.heads.pop(tenant, None)
        self.verifiers.update(poll.heads)
        self.held.update(poll.holds)
        if released is not None and released not in poll.holds:
            self.held.pop(released, None)
        return sum(len(b.envelopes) for b in batches)

    async def apply(self, poll: Poll, released: str | None) -> list[Batch]:
        try:
            await self.projection.apply(poll.batches, list(poll.holds.values()), releasing(released, poll))
            return poll.batches
        except Exception as error:
            if not self.projection.deterministic(error):
                raise
            culprits = await self.culprits(poll)
            if not culprits:
                raise
        poll.holds.update(culprits)
        batches = poll.without(culprits)
        await self.projection.apply(batches, list(poll.holds.values()), releasing(released, poll))
        return batches

    async def admitted(self, partition: int, record: Record, poll: Poll) -> Envelope | None:
        """Return the record's envelope if its tenant is not held and it follows the tenant's head; else hold."""
        return await self.admit(partition, record, *read(record), poll)

    async def admit(self, partition: int, record: Record, env: Envelope, problem: str | None, tenant: str | None,
                    poll: Poll) -> Envelope | None:
        if tenant is None:
            raise ProjectionHalted(f"{place(partition, record)}: {problem}; the record names no tenant to hold")
        if tenant in poll.holds:
            return None
        if tenant in self.held and tenant != poll.resuming:
            poll.passed.setdefault(partition, set()).add(tenant)
            return None
        verifier = await self.verifier(tenant, poll.heads)
        if not problem and not (problem := problem_of(env, verifier)):
            verifier.accept(env)
            poll.offsets[(tenant, env["chain_seq"])] = record.offset
            return env
        where = place(partition, record, key=not env)
        poll.holds[tenant] = Hold(tenant, partition, record.offset, verifier.head_seq + 1,
                                  f"{where}, tenant {tenant} chain_seq {verifier.head_seq + 1}: {problem}")
        return None

    async def verifier(self, tenant: str, heads: dict[str, ChainVerifier]) -> ChainVerifier:
        if tenant not in heads:
            known = self.verifiers.get(tenant)
            if known:
                seq, hash_ = known.head_seq, known.head_hash
            else:
                seq, hash_ = await self.projection.head(tenant) if self.from_store else self.projection.genesis
            heads[tenant] = ChainVerifier(tenant, seq, hash_)
        return heads[tenant]

    async def culprits(self, poll: Poll) -> dict[str, Hold]:
        """Probe each tenant's events of the poll alone; hold each tenant at the first event that fails."""
        by_tenant: dict[str, list[Envelope]] = {}
        partition_of: dict[str, int] = {}
        for batch in poll.batches:
            for env in batch.envelopes:
                by_tenant.setdefault(env["tenant_id"], []).append(env)
                partition_of[env["tenant_id"]] = batch.partition
        found = {}
        for tenant, envelopes in by_tenant.items():
            if failure := await self.failure_of(envelopes):
                index, error = await self.first_failing(envelopes, failure)
                env = envelopes[index]
                partition, offset, seq = partition_of[tenant], poll.offsets[(tenant, env["chain_seq"])], env["chain_seq"]
                found[tenant] = Hold(tenant, partition, offset, seq,
                                     f"partition {partition} offset {offset}, tenant {tenant} chain_seq {seq}: the "
                                     f"{self.projection.name} read model cannot store this {env['type']} event "
                                     f"({type(error).__name__}: {error})")
        return found

    async def failure_of(self, envelopes: list[Envelope]) -> Exception | None:
        try:
            await self.projection.probe(envelopes)
        except Exception as error:
            if not self.projection.deterministic(error):
                raise
            return error
        return None

    async def first_failing(self, envelopes: list[Envelope], failure: Exception) -> tuple[int, Exception]:
        """Bisect for the shortest failing prefix: its last event is the first the store refuses."""
        low, high = 0, len(envelopes) - 1  # the prefix ending at `high` is known to fail
        while low < high:
            middle = (low + high) // 2
            if error := await self.failure_of(envelopes[:middle + 1]):
                high, failure = middle, error
            else:
                low = middle + 1
        return high, failure

    async def resume(self, hold: Hold, records: AsyncIterable[Record], until: int | None = None) -> Hold | None:
        """Replay a held tenant's records from its held one (up to offset `until`); return None once released,
        or its new hold.

        The tenant stays held here until the store has released it: if the store fails (or refuses the
        catch-up, HoldMoved) part way, what is left is the hold as it was, and the request stands. The
        chunks stored before are kept; a retry passes over them (they are behind the stored head)."""
        tenant = hold.tenant_id
        self.verifiers.pop(tenant, None)  # a head cached before the hold may be behind the store's
        poll = await self.resume_poll(hold, until)
        async for record in records:
            if env := await self.resumed(hold, record, poll):
                poll.batches[0].envelopes.append(env)
            if tenant in poll.holds:
                break
            if len(poll.batches[0].envelopes) >= RESUME_CHUNK:
                await self.settle(poll)
                if tenant in poll.holds:
                    return self.held[tenant]
                poll = await self.resume_poll(hold, until)
        await self.settle(poll, released=tenant)
        return self.held.get(tenant)

    async def resume_poll(self, hold: Hold, until: int | None) -> Poll:
        heads: dict[str, ChainVerifier] = {}
        verifier = await self.verifier(hold.tenant_id, heads)
        poll = resume_poll(hold, verifier.head_seq, until)
        poll.heads.update(heads)
        return poll

    async def resumed(self, hold: Hold, record: Record, poll: Poll) -> Envelope | None:
        """The record's envelope if it is the held tenant's next event; events it already applied are passed over."""
        env, problem, tenant = read(record)
        if tenant != hold.tenant_id:
            return None
        verifier = await self.verifier(tenant, poll.heads)
        if not problem and isinstance(env.get("chain_seq"), int) and env["chain_seq"] <= verifier.head_seq:
            return None
        return await self.admit(hold.partition, record, env, problem, tenant, poll)
