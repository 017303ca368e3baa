"""`runledger export`, `verify-bundle`, `verify-readmodels`, `verify-archive`: the evidence commands.

Registered on the app when infra/entry/cli.py imports this module.
"""
import asyncio
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from infra.entry.cli_app import app, settings_or_exit


@app.command("export")
def export_bundle(tenant: Annotated[str, typer.Option(help="the tenant whose chain to export")],
                  scope: Annotated[str, typer.Option(help="run:<uuid> | approval:<uuid> | actor:<subject> | "
                                                          "time:<start>/<end> (RFC 3339) | tenant")],
                  out: Annotated[Path, typer.Option(help="the bundle file (written as FILE.partial, then renamed)")],
                  since_size: Annotated[Optional[int], typer.Option(help="also prove consistency from this tree "
                                                                         "size (a checkpoint you already hold)")] = None,
                  url: Annotated[str, typer.Option(help="API base URL, to record the export")] = "http://127.0.0.1:8080",
                  progress: Annotated[bool, typer.Option(help="show progress bars")] = True) -> None:
    """Write an evidence bundle of a scope up to the latest signed checkpoint, then record the export on the chain."""
    from infra.adapters.http.auth import TENANT_ID
    from infra.entry import export as job
    from schemas.bundle_scope import ScopeError, parse_scope
    from schemas.bundle_write import ChainBroken, ExportRefused
    if not TENANT_ID.match(tenant):
        typer.echo(f"error: {tenant!r} is not a valid tenant id ({TENANT_ID.pattern})", err=True)
        raise typer.Exit(2)
    try:
        parsed = parse_scope(scope)
    except ScopeError as error:
        typer.echo(f"error: --scope {scope!r}: {error}", err=True)
        raise typer.Exit(2)
    if not out.parent.is_dir():
        typer.echo(f"error: --out {out}: the directory {out.parent} does not exist", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit()
    try:
        done = asyncio.run(job.export(settings, tenant, parsed, out, since_size, url, progress and sys.stderr.isatty(),
                                      lambda line: typer.echo(line, err=True)))
    except (ExportRefused, LookupError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    except ChainBroken as error:
        typer.echo(f"error: tenant {tenant}'s chain does not verify, nothing exported: {error}", err=True)
        raise typer.Exit(1)
    except job.NotRequested as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)
    except job.NotRecorded as error:
        typer.echo(error.exported.summary())
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)
    typer.echo(done.summary())


@app.command("verify-bundle")
def verify_bundle(file: Annotated[Path, typer.Argument(help="the bundle to check")],
                  old_file: Annotated[Optional[Path], typer.Argument(help="an earlier bundle FILE must extend")] = None,
                  key: Annotated[Optional[str], typer.Option(help="the log's vkey, or a file holding it "
                                                                  "(default: the bundle's own, with a warning)")] = None
                  ) -> None:
    """Check an evidence bundle offline (exit 0 verified, 1 a check failed, 2 unreadable); with OLD_FILE, also
    that FILE's tree extends OLD_FILE's."""
    from schemas.bundle import BundleUnreadable, KeyUnusable, load_key, verify_bundle as check, verify_extends
    try:
        trusted = load_key(key) if key is not None else None
        report = verify_extends(old_file, file, trusted) if old_file is not None else check(file, trusted)
    except (BundleUnreadable, KeyUnusable) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    for warning in report.warnings:
        typer.echo(warning, err=True)
    m = report.manifest
    if not report.ok:
        more = f" (and {report.dropped} more)" if report.dropped else ""
        typer.echo(f"FAILED bundle {file}: {len(report.problems)} problems{more}")
        for problem in report.problems:
            typer.echo(f"  {problem}")
        raise typer.Exit(1)
    from schemas.bundle_scope import describe
    extends = f"; it extends {old_file}" if old_file is not None else ""
    typer.echo(f"OK bundle {file}: {describe(m['scope'])} of tenant {m['tenant']}, {report.events} events; every "
               f"hash, link and inclusion proof checks against checkpoint size {report.size} signed by "
               f"{report.key}; {len(report.earlier)} earlier checkpoints consistent with it{extends}")


@app.command("verify-readmodels")
def verify_readmodels(
        tenant: Annotated[Optional[list[str]], typer.Option(help="a tenant to verify (repeat for more)")] = None,
        all_tenants: Annotated[bool, typer.Option("--all", help="every tenant with events on the log")] = False,
        model: Annotated[Optional[list[str]], typer.Option(help="a read model to verify (repeat for more; "
                                                                "default: all of them)")] = None,
        url: Annotated[str, typer.Option(help="API base URL: records the results, and runs the check where a "
                                              "model lives in the embedded chdb")] = "http://127.0.0.1:8080",
        record: Annotated[bool, typer.Option(help="record each tenant's result on its chain")] = True,
        wait: Annotated[float, typer.Option(help="seconds to wait for each model to catch up", min=0, max=600)] = 30,
        progress: Annotated[bool, typer.Option(help="show progress bars")] = True) -> None:
    """Check each read model against the chain (exit 0 consistent, 1 a problem found, 2 nothing verified)."""
    from infra.adapters.http.auth import TENANT_ID
    from infra.entry import verify_readmodels as job
    from projectors.verification_job import MODELS

    def refuse(message: str) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)
    if bool(tenant) == all_tenants:
        refuse("name the tenants to verify (--tenant T, repeatable) or pass --all, not both")
    if bad := [t for t in tenant or [] if not TENANT_ID.match(t)]:
        refuse(f"{bad[0]!r} is not a valid tenant id ({TENANT_ID.pattern})")
    if unknown := [m for m in model or [] if m not in MODELS]:
        refuse(f"no read model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    models = [m for m in MODELS if m in set(model or MODELS)]
    settings = settings_or_exit()
    try:
        code = asyncio.run(job.run(settings, list(dict.fromkeys(tenant)) if tenant else None, models, url, record,
                                   wait, progress and sys.stderr.isatty(), typer.echo,
                                   lambda line: typer.echo(line, err=True)))
    except job.Unusable as error:
        refuse(str(error))
    raise typer.Exit(code)


@app.command("verify-archive")
def verify_archive(directory: Annotated[Path, typer.Argument(help="the archive root (RUNLEDGER_ARCHIVE_DIR) or one "
                                                                   "tenant's directory in it")],
                   key: Annotated[str, typer.Option(help="the log's vkey, or a file holding vkeys (one a line)")],
                   tenant: Annotated[Optional[str], typer.Option(help="check only this tenant's archive "
                                                                      "(default: every one under DIRECTORY)")] = None
                   ) -> None:
    """Check an archive of C2SP tlog-tiles offline (exit 0 verified, 1 a check failed, 2 unusable input)."""
    from infra.entry.archive_cli import verify
    raise typer.Exit(verify(directory, key, tenant, typer.echo))
