"""The `nlpkit` command-line entry point.

Every sub-command lives in its own module of `commands/` and is registered here. Modules import
TensorFlow and the heavy parts of nlpkit inside the command functions, so `nlpkit --help` is fast.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer  # noqa: E402

from commands import common  # noqa: E402
from nlpkit import __version__  # noqa: E402
from nlpkit.errors import NlpkitError  # noqa: E402

app = typer.Typer(
    name="nlpkit",
    help="Transformer text models from raw text to a served model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool):
    if value:
        typer.echo(f"nlpkit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and final results."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print more detail (and library logs)."),
    seed: int = typer.Option(None, "--seed", help="Seed Python, NumPy and the backend for reproducible runs."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
):
    """nlpkit: tokenize, pretrain, fine-tune, evaluate, export and serve transformer text models."""
    common.STATE.update(quiet=quiet, verbose=verbose, seed=seed, debug=debug)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
    if ctx.invoked_subcommand and not {"--help", "-h"} & set(sys.argv):
        # Every command but --help needs TensorFlow (Keras imports it too): import it first, through
        # the helper that keeps its native start-up log lines off the terminal.
        from nlpkit._tf import import_tensorflow

        import_tensorflow()
    if seed is not None:
        common.set_seed(seed)


def _register_commands():
    """Each command module exposes `register(app)`; a module that is not there yet is skipped."""
    import importlib

    for name in common.COMMAND_MODULES:
        try:
            module = importlib.import_module(f"commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"commands.{name}":
                continue
            raise
        module.register(app)


_register_commands()


def run():
    """Console-script entry: user errors become one red line and exit code 2."""
    try:
        result = app(standalone_mode=False)
    except NlpkitError as err:
        if common.STATE["debug"]:
            raise
        common.print_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        common.print_error("interrupted")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - the last line of defence for the CLI
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if common.STATE["debug"]:
            raise
        common.print_error(f"internal error: {type(err).__name__}: {err} (re-run with --debug for the traceback)")
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    run()
