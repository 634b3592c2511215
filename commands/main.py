"""The `nlpkit` command-line entry point.

Every sub-command lives in its own module of `commands/` and is registered here. Modules import
TensorFlow and the heavy parts of nlpkit inside the command functions, and TensorFlow itself is
imported only once a command's arguments are parsed, so `nlpkit --help` and usage errors are fast.
"""

import functools
import sys

import typer

from commands import common
from nlpkit import __version__, logs
from nlpkit.errors import NlpkitError

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
    if verbose or debug:
        logs.show_dependency_logs()


def _after_parsing(command):
    """`command` preceded by what every command needs once its arguments are valid: TensorFlow,
    imported first through the helper that keeps its start-up log lines off the terminal (Keras
    would import it too), then the seed. Click runs the group callback above before it parses the
    sub-command's arguments, so doing this there made every usage error wait seconds for TensorFlow."""

    @functools.wraps(command)
    def run_command(*args, **kwargs):
        from nlpkit._tf import import_tensorflow

        import_tensorflow()
        if common.STATE["seed"] is not None:
            common.set_seed(common.STATE["seed"])
        return command(*args, **common.resolve_auto_precision(kwargs))

    return run_command


def _all_commands(typer_app):
    """The CommandInfo of every command, those of sub-groups (`nlpkit bench ...`) included."""
    yield from typer_app.registered_commands
    for group in typer_app.registered_groups:
        yield from _all_commands(group.typer_instance)


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
    for command in _all_commands(app):
        command.callback = _after_parsing(command.callback)


_register_commands()


def _usage_error_line(err):
    """One line for a usage error: what is wrong and where to read the command's options."""
    message = " ".join(err.format_message().split()).rstrip(".")
    where = err.ctx.command_path if err.ctx is not None else "nlpkit"
    return f"{message[:1].lower()}{message[1:]} (see `{where} --help`)"


def run():
    """Console-script entry: user and usage errors become one red line and exit code 2."""
    # Typer vendors its own click; its exceptions are not the `click` package's.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    try:
        with logs.dependency_logs_hidden():
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
    except NoArgsIsHelpError as err:  # `nlpkit` or `nlpkit bench` alone: the help is already printed
        sys.exit(err.exit_code)
    except UsageError as err:  # unknown or missing option, bad value, typer.BadParameter
        common.print_error(_usage_error_line(err))
        sys.exit(2)
    except ClickException as err:
        common.print_error(" ".join(err.format_message().split()))
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001 - the last line of defence for the CLI
        if common.STATE["debug"]:
            raise
        common.print_error(f"internal error: {type(err).__name__}: {err} (re-run with --debug for the traceback)")
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    run()
