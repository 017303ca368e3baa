"""`runledger`: serve the roles, verify a chain, mint tokens, run the demo workload."""
import asyncio
import sys
from typing import Annotated, Optional

import typer

from infra.entry import cli_evidence  # its commands (export, verify-bundle, ...) register on app
from infra.entry.cli_app import app, settings_or_exit

__all__ = ["app", "cli_evidence"]


@app.command()
def serve(api: Annotated[bool, typer.Option(help="serve the HTTP API")] = True,
          processor: Annotated[bool, typer.Option(help="run a command processor")] = True,
          projectors: Annotated[bool, typer.Option(help="run the projectors")] = True,
          port: Annotated[Optional[int], typer.Option(help="API port")] = None) -> None:
    """Run the API and/or the command processor in this process until Ctrl-C."""
    import uvloop
    from infra.entry.bootstrap import configure_logging, serve as run_roles
    settings = settings_or_exit(api_port=port)
    configure_logging(settings)
    from infra.entry.bootstrap import MissingSetting
    try:
        uvloop.run(run_roles(settings, api=api, processor=processor, projectors=projectors))
    except MissingSetting as error:
        typer.echo(f"configuration error: {error}", err=True)
        raise typer.Exit(2)


@app.command()
def verify(tenant: Annotated[str, typer.Option(help="tenant id whose chain to verify")],
           progress: Annotated[bool, typer.Option(help="show a progress bar")] = True) -> None:
    """Read a tenant's chain from Kafka and confirm it, or name the first bad chain_seq."""
    from infra.entry.verify import verify_tenant
    settings = settings_or_exit()
    try:
        verdict = asyncio.run(verify_tenant(settings, tenant, progress and sys.stderr.isatty()))
    except LookupError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    if not verdict.ok:
        typer.echo(f"BROKEN tenant {tenant}: first bad chain_seq {verdict.bad_seq}: "
                   f"{verdict.problem} ({verdict.count} events verified before it)")
        raise typer.Exit(1)
    if verdict.count == 0:
        typer.echo(f"EMPTY tenant {tenant}: no events on {settings.events_topic}; "
                   f"check the tenant id and RUNLEDGER_TOPIC_PREFIX")
        raise typer.Exit(1)
    typer.echo(f"OK tenant {tenant}: {verdict.count} events, chain_seq 1..{verdict.count}, "
               f"head hash {verdict.head_hash}")


@app.command()
def token(tenant: Annotated[str, typer.Option()], subject: Annotated[str, typer.Option()],
          roles: Annotated[str, typer.Option(help="comma-separated roles")] = "operator",
          ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 3600) -> None:
    """Mint a bearer token signed with RUNLEDGER_JWT_SECRET."""
    from infra.adapters.http.auth import ROLES, TENANT_ID, mint
    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    if not TENANT_ID.match(tenant):
        typer.echo(f"error: {tenant!r} is not a valid tenant id ({TENANT_ID.pattern})", err=True)
        raise typer.Exit(2)
    if not wanted or not set(wanted) <= ROLES:
        typer.echo(f"error: roles must be drawn from {sorted(ROLES)}", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit()
    typer.echo(mint(settings.jwt_secret.get_secret_value(), tenant, subject, wanted,
                    settings.jwt_audience, ttl))


@app.command()
def demo(url: Annotated[str, typer.Option(help="API base URL")] = "http://127.0.0.1:8080",
         tenant: Annotated[str, typer.Option()] = "demo") -> None:
    """Drive a demo workload through the API and verify the resulting chain."""
    from infra.entry.demo import run_demo
    settings = settings_or_exit()
    raise typer.Exit(asyncio.run(run_demo(settings, url, tenant)))


projector_app = typer.Typer(help="Inspect and rebuild projectors.", no_args_is_help=True)
app.add_typer(projector_app, name="projector")


@projector_app.command("rebuild")
def projector_rebuild(name: Annotated[str, typer.Argument(help="runs | approvals | audit | cost")],
                      url: Annotated[str, typer.Option(help="API of the process serving the model (used "
                                                            "when the model lives in embedded chdb)")] = "http://127.0.0.1:8080",
                      swap: Annotated[bool, typer.Option(help="swap the rebuilt tables in when done")] = True) -> None:
    """Replay the log from offset 0 into fresh tables with a progress bar, then swap them in atomically."""
    from infra.entry.bootstrap import CLICKHOUSE_PROJECTIONS, POSTGRES_PROJECTIONS
    names = {cls.name for cls in POSTGRES_PROJECTIONS + CLICKHOUSE_PROJECTIONS}
    if name not in names:
        typer.echo(f"error: no projector {name!r}; choose from {', '.join(sorted(names))}", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit()
    embedded = name in {cls.name for cls in CLICKHOUSE_PROJECTIONS} and not settings.clickhouse_url
    if embedded and not swap:
        typer.echo("error: --no-swap needs direct access; the embedded engine belongs to the serving process", err=True)
        raise typer.Exit(2)
    from infra.entry import rebuild_cli
    runner = rebuild_cli.via_api(settings, name, url) if embedded else rebuild_cli.direct(settings, name, swap)
    try:
        typer.echo(asyncio.run(runner))
    except rebuild_cli.RebuildFailed as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


@projector_app.command("resume")
def projector_resume(name: Annotated[str, typer.Argument(help="runs | approvals | channels | audit | cost")],
                     tenant: Annotated[str, typer.Option(help="the held tenant to replay")],
                     url: Annotated[str, typer.Option(help="API of a serving process")] = "http://127.0.0.1:8080") -> None:
    """Replay a tenant held in one read model from the event it stopped at (after fixing the cause)."""
    from infra.entry import rebuild_cli
    try:
        typer.echo(asyncio.run(rebuild_cli.resume_via_api(settings_or_exit(), name, tenant, url)))
    except rebuild_cli.RebuildFailed as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


retention_app = typer.Typer(help="Apply retention policies.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")


@retention_app.command("sweep")
def retention_sweep(tenant: Annotated[str, typer.Option(help="the tenant to sweep")],
                    record_class: Annotated[str, typer.Option("--class", help="operational | audit")] = "operational",
                    batch: Annotated[int, typer.Option(help="runs removed per sweep event", min=1, max=1000)] = 500,
                    url: Annotated[str, typer.Option(help="API base URL")] = "http://127.0.0.1:8080") -> None:
    """Remove a tenant's expired, un-held records of a class from its read models, batch by batch."""
    from infra.entry import sweep_cli
    if record_class not in ("operational", "audit"):
        typer.echo(f"error: --class must be operational or audit, not {record_class!r}", err=True)
        raise typer.Exit(2)
    try:
        typer.echo(asyncio.run(sweep_cli.sweep(settings_or_exit(), url, tenant, record_class, batch,
                                               sys.stderr.isatty())))
    except sweep_cli.SweepFailed as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


keys_app = typer.Typer(help="Manage the key-encryption key of content data keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate(new_kek_id: Annotated[str, typer.Option(help="id of the new KEK (RUNLEDGER_NEW_KEK holds the key)")],
                batch: Annotated[int, typer.Option(help="keys rewrapped per transaction", min=1)] = 500) -> None:
    """Rewrap every data key under a new KEK (RUNLEDGER_NEW_KEK), resumably, with progress."""
    from infra.entry import keys_cli
    try:
        typer.echo(asyncio.run(keys_cli.rotate(settings_or_exit(), new_kek_id, batch, sys.stderr.isatty())))
    except (keys_cli.RotationRefused, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


@app.command()
def topics() -> None:
    """Create the ledger topics if they are missing."""
    from infra.adapters.kafka import ensure_topics
    settings = settings_or_exit()
    asyncio.run(ensure_topics(settings))
    typer.echo(f"topics ready: {settings.commands_topic}, {settings.events_topic}, "
               f"{settings.replies_topic} ({settings.partitions} partitions)")


if __name__ == "__main__":
    app()
