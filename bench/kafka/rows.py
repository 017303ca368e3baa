"""The Kafka client benchmark's table rows and its side-by-side appendix."""
from __future__ import annotations

from bench.kafka.cell import Cell, Raw
from bench.lib.measure import Window, fmt_ms, fmt_num
from bench.lib.report import Report

CLEAR_WIN = 1.5  # "wins clearly": at least this many times aiokafka's records/s at the same batch size


def cell_rows(report: Report, cell: Cell, idle_broker: float | None) -> None:
    phase = f"txn batch {cell.batch}"
    lat = cell.latency
    report.rate(phase, f"{cell.client} records/s", cell.records)
    report.rate(phase, f"{cell.client} transactions/s", cell.txns)
    report.info(phase, f"{cell.client} latency per transaction, ms",
                f"p50 {fmt_ms(lat.p50)}, p99 {fmt_ms(lat.p99)}, max {fmt_ms(lat.max)} ({lat.n:,} transactions)")
    report.info(phase, f"{cell.client} client CPU s per 1000 records", f"{cell.cpu_per_1000():.3f}")
    if idle_broker is not None and "broker" in cell.cpu:
        report.info(phase, f"{cell.client} broker CPU ms per transaction",
                    f"{cell.broker_ms_per_txn(idle_broker):.2f} (idle {idle_broker:.3f} cores subtracted; "
                    f"broker {cell.cpu['broker'] / max(cell.seconds, 1e-9):.2f} cores)")


TXN_APIS = ("ADD_PARTITIONS_TO_TXN (PLAINTEXT)", "PRODUCE", "ADD_OFFSETS_TO_TXN", "TXN_OFFSET_COMMIT",
            "WRITE_TXN_MARKERS", "ADD_PARTITIONS_TO_TXN (broker's", "FETCH")


def request_rows(report: Report, cell: Cell, traffic) -> None:
    """Requests the broker handled per transaction (per END_TXN: each transaction ends with exactly one), by API."""
    ends = traffic.of("END_TXN")
    if not ends:
        return
    per = {api: traffic.of(api) / ends for api in TXN_APIS}
    report.info(f"txn batch {cell.batch}", f"{cell.client} broker requests per transaction",
                ", ".join(f"{api.split(' (')[0] + (' verify' if 'broker' in api else '')} {n:.2f}"
                          for api, n in per.items() if n) + f" ({ends:,} transactions counted)")


def ratio_rows(report: Report, cells: list[Cell]) -> None:
    by = {(c.client, c.batch): c for c in cells}
    for batch in sorted({c.batch for c in cells}):
        a = by.get(("aiokafka", batch))
        for other in sorted({c.client for c in cells if c.client != "aiokafka"}):
            c = by.get((other, batch))
            if not (a and c and a.records.rate > 0):
                continue
            ratio = c.records.rate / a.records.rate
            both = Window(min(a.records.count, c.records.count), min(a.seconds, c.seconds), "records")
            report.check(f"txn batch {batch}", f"{other} / aiokafka records/s", f"{ratio:.2f}×",
                         f"≥ {CLEAR_WIN}× (a clear win)", ratio >= CLEAR_WIN, both)


def raw_rows(report: Report, raws: list[Raw]) -> None:
    for raw in raws:
        report.rate("raw produce", f"{raw.client} records/s", raw.window,
                    detail=f"client CPU {raw.cpu_per_1000:.3f} s per 1000 records")


def appendix(cells: list[Cell], raws: list[Raw], idle_broker: float | None) -> str:
    """One markdown table, both clients side by side per batch size (for docs/bench-kafka.md)."""
    lines = ["| batch | client | records/s | transactions/s | p50 ms | p99 ms | client CPU s/1000 rec | "
             "broker cores | broker CPU ms/txn |", "|---|---|---|---|---|---|---|---|---|"]
    for cell in sorted(cells, key=lambda c: (c.batch, c.client)):
        broker = cell.cpu.get("broker")
        cores = fmt_num(broker / cell.seconds, 2) if broker is not None and cell.seconds else "n/a"
        per_txn = fmt_num(cell.broker_ms_per_txn(idle_broker), 2) if idle_broker is not None else "n/a"
        lat = cell.latency
        lines.append(f"| {cell.batch} | {cell.client} | {fmt_num(cell.records.rate)} | {fmt_num(cell.txns.rate)} | "
                     f"{fmt_ms(lat.p50)} | {fmt_ms(lat.p99)} | {cell.cpu_per_1000():.3f} | {cores} | {per_txn} |")
    for raw in raws:
        lines.append(f"| raw | {raw.client} | {fmt_num(raw.window.rate)} | — | — | — | {raw.cpu_per_1000:.3f} | — | — |")
    return "## side by side\n\n" + "\n".join(lines)
