"""Output paths of the command line: checked before any work starts, written under a
temporary name in the same directory and renamed only once complete.

A command that fails, whether on a bad path found before its work or on a write that fails
after it, leaves no partial output and no temporary file behind.
"""

__all__ = ["check_output_file", "check_output_dir", "write_files", "save_bundle",
           "progress_bar"]

import contextlib
import os
import secrets
import stat
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError


def _kind(path, option, shown):
    """``"dir"``, ``"file"``, ``"other"`` (a device, a FIFO...) or ``None`` (missing, or a
    component of ``path`` is not a directory) for ``path``."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # a name too long, a symlink loop, no permission to look
        raise ConfigError(f"{option} {shown}: {exc.strerror or exc}; choose another "
                          f"{option}") from None
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def _probe(directory, option, shown):
    """Create and remove a file in ``directory``: the one check of writability that also
    holds for root, read-only mounts and pseudo file systems such as ``/proc``."""
    try:
        fd, name = tempfile.mkstemp(prefix=".sparqforge-probe-", dir=directory)
    except OSError as exc:
        raise ConfigError(f"{option} {shown}: cannot create files in {directory} "
                          f"({exc.strerror or exc}); choose another {option}") from None
    os.close(fd)
    os.unlink(name)


def _empty(option, example):
    return ConfigError(f"{option} is empty; give a name, for example {option} {example}")


def check_output_file(path, option, example="model.npz"):
    """Check that the file ``path`` can be written, before any work: not empty, not an
    existing directory or special file, its directory exists and is writable.

    Returns the path as a :class:`~pathlib.Path`.

    Raises
    ------
    ConfigError
        Naming ``option`` (the command-line option that gave the path) and the fix.
    """
    text = os.fspath(path)
    if not text:
        raise _empty(option, example)
    path = Path(text)
    kind = _kind(path, option, path)
    if kind == "dir" or text.endswith(("/", os.sep)):
        raise ConfigError(f"{option} {text} is a directory; give a file name, for example "
                          f"{option} {path / example}")
    if kind == "other":
        raise ConfigError(f"{option} {path} exists and is not a regular file; choose another "
                          f"{option}")
    parent = path.parent
    parent_kind = _kind(parent, option, path)
    if parent_kind is None:
        raise ConfigError(f"{option} {path}: directory {parent} does not exist; create it or "
                          f"choose another {option}")
    if parent_kind != "dir":
        raise ConfigError(f"{option} {path}: {parent} is not a directory; choose another "
                          f"{option}")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        name_max = 255
    # Room for the temporary name the file is written under first.
    if len(os.fsencode(path.name)) + len(".tmp") > name_max:
        raise ConfigError(f"{option} {path}: file name too long (at most {name_max - 4} "
                          f"bytes here); choose a shorter one")
    _probe(parent, option, path)
    return path


def check_output_dir(path, option, example="out"):
    """Check that the directory ``path`` exists and is writable or can be created, before
    any work: not empty, not an existing file, its nearest existing ancestor a writable
    directory.

    Returns the path as a :class:`~pathlib.Path`.

    Raises
    ------
    ConfigError
        Naming ``option`` (the command-line option that gave the path) and the fix.
    """
    text = os.fspath(path)
    if not text:
        raise _empty(option, example)
    path = Path(text)
    existing = path
    kind = _kind(existing, option, path)
    if kind not in (None, "dir"):
        raise ConfigError(f"{option} {path} exists and is not a directory; choose another "
                          f"{option}")
    while kind is None and existing != existing.parent:
        existing = existing.parent
        kind = _kind(existing, option, path)
    if kind != "dir":
        raise ConfigError(f"{option} {path}: {existing} is not a directory; choose another "
                          f"{option}")
    _probe(existing, option, path)
    return path


def write_files(directory, files, option):
    """Write ``files`` (name -> text or bytes) into ``directory``, creating it if needed.

    Each file is written under a temporary name in ``directory``, and all are renamed once
    all are written. On a failure the temporary files, the files this call added and the
    directories it created are removed (a file it already replaced stays replaced).

    Returns the written paths.

    Raises
    ------
    ConfigError
        When a file cannot be written (a full disk, a directory that vanished), naming the
        file and ``option``.
    """
    directory = Path(directory)
    created = []
    parent = directory
    while not parent.exists() and parent != parent.parent:
        created.append(parent)  # deepest first
        parent = parent.parent
    temps, added, done = [], [], False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            tmp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            temps.append((tmp, directory / name))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for tmp, final in temps:
            new = not final.exists()
            os.replace(tmp, final)
            if new:
                added.append(final)
        done = True
    except OSError as exc:
        where = exc.filename or directory
        raise ConfigError(f"Cannot write {where} ({exc.strerror or exc}); free some space or "
                          f"choose another {option}") from None
    finally:
        if not done:
            for path in [tmp for tmp, _ in temps] + added:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return [final for _, final in temps]


def save_bundle(bundle, path, option):
    """:func:`sparqforge.sw.bundle.save` (which writes under a temporary name and renames),
    with its operating-system errors (a full disk) as a :class:`ConfigError` naming
    ``option``."""
    from ..sw import bundle as bundle_io

    try:
        return bundle_io.save(bundle, path)
    except OSError as exc:
        raise ConfigError(f"Cannot write {path} ({exc.strerror or exc}); free some space or "
                          f"choose another {option}") from None


def progress_bar(label, stream=None):
    """A text progress callback: ``label [#####.....] done/total  rate/s``."""
    import sys
    stream = stream or sys.stderr
    start = time.monotonic()

    def update(done, total):
        width = 30
        filled = int(width * done / max(total, 1))
        rate = done / max(time.monotonic() - start, 1e-9)
        stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                     f"{rate:.1f}/s")
        if done >= total:
            stream.write("\n")
        stream.flush()
    return update
