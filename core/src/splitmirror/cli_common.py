"""What every ``splitmirror`` command shares: the consoles, ``--json``, and how errors end a
command (one sentence and an exit code; a traceback only for a bug)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from .catalog import CatalogAddress, catalog_address
from .config import load_config
from .errors import SessionFailed, SessionInterrupted, UserError

F = TypeVar("F", bound=Callable[..., Any])

# Piped output keeps whole lines (paths, errors) instead of rich's 80-column default.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def _emit_json(data: Any, console: Console | None = None) -> None:
    text = json.dumps(data, indent=2, default=str)
    if console is None or console is out:
        click.echo(text)
    else:
        click.echo(text, err=True)


def handled(func: F) -> F:
    """Turn handled errors into one sentence and an exit code; anything else is a bug and keeps
    its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except UserError as error:
            _fail(str(error), error.exit_code, as_json)
        except SessionFailed as error:
            _fail(str(error), error.exit_code, as_json=False)  # the summary was printed already
        except (KeyboardInterrupt, SessionInterrupted) as error:
            name = getattr(error, "signal_name", "SIGINT")
            _fail(f"interrupted by {name}", 130, as_json)

    return wrapper  # type: ignore[return-value]


class _State:
    #: Set by ``backup`` when the archive itself goes to standard output (``path = "-"``).
    archive_on_stdout = False


state = _State()


def _fail(message: str, code: int, as_json: bool) -> NoReturn:
    if as_json:
        # Standard output may be the archive itself (path = "-"): then the error goes beside it.
        _emit_json({"error": message, "exit_code": code}, err if state.archive_on_stdout else out)
    else:
        err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    sys.exit(code)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


def _says_catalog(address: CatalogAddress) -> None:
    out.print(f"[dim]catalog {escape(address.shown)}[/dim]", soft_wrap=True)


catalog_option = click.option(
    "--catalog",
    "catalog_path",
    metavar="PATH|URL",
    help="Catalog: a SQLite file, or a URL such as postgresql://host/db (docs/fleet.md); "
    "default: $SPLITMIRROR_CATALOG, else the user's data directory.",
)
config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the catalog CONFIG's sessions use (its [session] catalog, else the default).",
)


def _catalog_for(catalog_path: str | None, config_file: Path | None) -> CatalogAddress:
    """The catalog a reading command reads: --config's, --catalog, or the default."""
    if config_file is not None and catalog_path is not None:
        raise click.UsageError("give --config or --catalog, not both")
    if config_file is not None:
        return catalog_address(load_config(config_file).session.catalog)
    return catalog_address(catalog_path)
