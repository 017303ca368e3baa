"""The `runledger` Typer app and what every command shares (infra/entry/cli.py, infra/entry/cli_evidence.py)."""
import typer
from pydantic import ValidationError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="runledger: the system of record for governed AI agent work.")


def settings_or_exit(**overrides):
    from infra.entry.bootstrap import build_settings
    try:
        return build_settings(**overrides)
    except ValidationError as error:
        for e in error.errors():
            typer.echo(f"configuration error: {'.'.join(map(str, e['loc']))}: {e['msg']}", err=True)
        raise typer.Exit(2)
