"""Write outputs so nothing is lost or half-written: temporary name first, rename into place."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from nlpkit.errors import NlpkitError


def check_writable(target):
    """Raise NlpkitError unless the folder that will hold `target` exists (or can be made) and is writable."""
    parent = Path(target).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NlpkitError(f"cannot create output folder {parent}: {err.strerror}", hint="choose a writable --output")
    if not os.access(parent, os.W_OK):
        raise NlpkitError(f"output folder {parent} is not writable", hint="choose a writable --output")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    target = Path(path)
    check_writable(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs get the usual mode
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path, *, overwrite=False):
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds.

    An existing `path` is refused unless `overwrite` is set.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise NlpkitError(f"{target} already exists", hint="pass --force/--overwrite or choose another --output")
    check_writable(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
