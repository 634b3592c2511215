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
