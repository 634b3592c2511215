"""Write outputs so nothing is lost or half-written: temporary name first, rename into place.

The shared mechanics every output-writing command calls:
    check_replaceable   an existing output is refused unless --force, and never replaced when it
                        is not this command's kind of output
    check_not_input     an output that is also an input (same resolved path or same file) is refused
    atomic_file/_dir    write beside the target under `.NAME.PID.XXXXXXXX.tmp`, rename into place
                        at the end; temps of killed runs (dead PID) are removed first
    run_lock            one process at a time in a run directory (flock + PID, stale after kill -9)
    disk_errors         a full disk becomes one line instead of a traceback
    json_text           JSON that stays valid: NaN / Inf become null
"""

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from nlpkit.errors import NlpkitError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_RANDOM_LENGTH = 8  # the random part of a tempfile name


def check_writable(target):
    """Raise NlpkitError unless the folder that will hold `target` exists (or can be made) and is writable."""
    parent = Path(target).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NlpkitError(f"cannot create output folder {parent}: {err.strerror}", hint="choose a writable --output")
    if not os.access(parent, os.W_OK):
        raise NlpkitError(f"output folder {parent} is not writable", hint="choose a writable --output")


def check_at_least(minimum, **options):
    """Raise NlpkitError for the first option (name -> value; None = unset) below `minimum`."""
    for name, value in options.items():
        if value is not None and value < minimum:
            raise NlpkitError(f"{name} must be at least {minimum}, got {value}")


def check_replaceable(path, force, *, option="--output", flag="--force", is_ours=None, kind=None):
    """Refuse an existing `path` unless `force`; refuse, even with `force`, a non-empty folder that
    `is_ours(path)` says is not an output of this command (`kind` names what it should be).

    An empty folder holds nothing to lose, so it is always accepted.
    """
    target = Path(path)
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if is_ours is not None and not is_ours(target):
        raise NlpkitError(f"{option} {target} exists and is not {kind}",
                          hint=f"choose another {option}; {flag} only replaces {kind}")
    if not force:
        raise NlpkitError(f"{option} {target} already exists",
                          hint=f"pass {flag} to replace it, or choose another {option}")


def check_output_file(path, force, *, option="--output", flag="--force"):
    """Early checks of an output file: not a folder, not replaced without `force`, its folder writable."""
    target = Path(path)
    if target.is_dir():
        raise NlpkitError(f"{option} {target} is a folder", hint="pass a file name")
    check_replaceable(target, force, option=option, flag=flag)
    check_writable(target)


def check_not_input(output, inputs, *, option="--output"):
    """Refuse an output that is one of `inputs` ({option name: path}) or a folder holding one:
    replacing it would destroy what the command reads."""
    out = Path(output).expanduser().resolve()
    for name, path in inputs.items():
        if path is None or not Path(path).expanduser().exists():
            continue
        source = Path(path).expanduser().resolve()
        if source == out or out in source.parents or (out.exists() and os.path.samefile(source, out)):
            raise NlpkitError(f"{option} {output} is also the input {name} {path}: writing it would destroy the input",
                              hint=f"choose another {option}")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _is_stale_temp(name, prefix):
    """Whether `name` is a temp of the target with `prefix` whose process is gone.

    `.NAME.PID.XXXXXXXX.tmp` is stale when PID is not running; `.NAME.XXXXXXXX.tmp` (no PID: written
    by nlpkit before the PID was added) always is. Other names (another output's) are left alone.
    """
    if not (name.startswith(prefix) and name.endswith(".tmp")):
        return False
    parts = name[len(prefix):-len(".tmp")].split(".")
    if len(parts) == 1:
        return len(parts[0]) == _RANDOM_LENGTH
    if len(parts) == 2 and parts[0].isdigit() and len(parts[1]) == _RANDOM_LENGTH:
        return not _pid_alive(int(parts[0]))
    return False


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(target):
    """Remove what killed runs writing `target` left beside it: their temp files and folders, and
    the old copy of an interrupted swap (put back when `target` itself is missing)."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    prefix = f".{target.name}."
    for entry in target.parent.iterdir():
        if _is_stale_temp(entry.name, prefix):
            _remove(entry)
    old = _old_copy(target)
    if old.exists() and not target.exists():
        os.replace(old, target)
    elif old.exists():
        _remove(old)


def _old_copy(target):
    return target.with_name(f".{target.name}.old")


def _temp_prefix(target):
    return f".{target.name}.{os.getpid()}."


def new_temp_dir(target):
    """A fresh temporary folder beside `target` (named so `remove_stale_temps` finds it once its process dies)."""
    target = Path(target)
    check_writable(target)
    return Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))


def swap_in(tmp, target):
    """Replace `target` by the complete folder `tmp`; at any moment one of them is whole (a kill
    between the two renames leaves `.NAME.old`, which `remove_stale_temps` puts back)."""
    target = Path(target)
    os.chmod(tmp, 0o777 & ~_umask())
    if target.exists():
        old = _old_copy(target)
        _remove(old)
        os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)


def _is_no_space(err):
    # TensorFlow and h5py report a full disk as their own exception types, with the C library's text.
    return getattr(err, "errno", None) in _NO_SPACE or "No space left on device" in str(err)


@contextlib.contextmanager
def disk_errors(target):
    """Turn a full disk (ENOSPC / EDQUOT) while writing `target` into one NlpkitError line."""
    try:
        yield
    except NlpkitError:
        raise
    except Exception as err:
        if _is_no_space(err):
            raise NlpkitError(f"no space left on the device while writing {target}",
                              hint="free some disk space or choose another --output") from None
        raise


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    target = Path(path)
    if target.is_dir():
        raise NlpkitError(f"output {target} is a folder", hint="pass a file name")
    check_writable(target)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with disk_errors(target):
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
    remove_stale_temps(target)
    tmp = new_temp_dir(target)
    try:
        with disk_errors(target):
            yield tmp
            swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def run_lock(path, command):
    """Hold `path` (a run directory) for this process: a second process gets one NlpkitError line.

    The lock is an flock on `.NAME.lock` beside the folder, holding the owner's PID for the message.
    The kernel drops an flock when its process dies, so the lock of a killed run is stale by
    itself and the next run takes it over.
    """
    target = Path(path)
    lock = target.with_name(f".{target.name}.lock")
    check_writable(lock)
    while True:
        handle = open(lock, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise NlpkitError(f"{target} is in use by another {command} (pid {owner})",
                              hint="wait for it to finish, or choose another --output") from None
        # The owner before us may have removed the file between our open and our flock: then we
        # hold a lock on a deleted file, and must lock the file now at that path instead.
        if os.path.exists(lock) and os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_text(value, **options):
    """`json.dumps` that always gives valid JSON: NaN and +-Inf (undefined metrics, a broken model) become null."""
    return json.dumps(_finite(value), allow_nan=False, **options)
