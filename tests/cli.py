"""Run the `nlpkit` CLI in-process, exactly as the console script does (error handling included)."""

import sys


def run_cli(capsys, *args):
    """(exit code, stdout, stderr) of `nlpkit ARGS...`."""
    from commands.main import run

    saved = sys.argv
    sys.argv = ["nlpkit", *map(str, args)]
    capsys.readouterr()
    try:
        run()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli_ok(*args):
    """Run `nlpkit ARGS...` where no capsys is at hand (module-scoped fixtures); assert exit code 0."""
    from commands.main import run

    saved = sys.argv
    sys.argv = ["nlpkit", *map(str, args)]
    try:
        run()
        code = 0
    except SystemExit as done:
        code = done.code
    finally:
        sys.argv = saved
    assert code in (0, None), f"nlpkit {' '.join(map(str, args))} exited with {code}"
