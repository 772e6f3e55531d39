"""Files and directories zdf creates, made so that another local user cannot redirect them.

* ``private_dir``: a data dir (LevelDB, sockets, scratch) is 0700 and must be
  ours: a path in a shared /tmp that someone else created first, or a symlink
  they planted there, is refused with one line instead of being used.
* ``open_nofollow`` / ``write_file``: output files (a sink's rows, a job's
  summary) are opened with ``O_NOFOLLOW``, so a symlink planted at their name
  fails the open instead of having its target truncated and overwritten.
* ``check_name``: a name from a job file that becomes a path component (a
  flow-id) has no separator and is not ``.`` or ``..``.
"""

from __future__ import annotations

import os
import stat

from zdf.errors import ConfigError

PRIVATE_DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str) -> str:
    """Make ``path`` (and its parents) exist, then make it a directory only this user
    can enter (0700). ``ConfigError`` when it is a symlink, not a directory, owned by
    someone else, or not writable."""
    try:
        os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create directory: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: not a directory (a symlink is refused)")
    if info.st_uid != os.getuid():
        raise ConfigError(f"{path}: owned by another user (uid {info.st_uid})")
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
        try:
            os.chmod(path, PRIVATE_DIR_MODE)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot make it private: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: not writable")
    return path


def open_nofollow(path: str, flags: int, mode: int = FILE_MODE) -> int:
    """``os.open`` that refuses a symlink at ``path`` (``OSError`` ELOOP)."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def write_file(path: str, text: str) -> None:
    """Replace ``path``'s content with ``text``, never through a symlink."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def check_name(value: str, what: str) -> str:
    """A single path component: not empty, no separator, not ``.`` or ``..``."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ValueError(f"{what} {value!r}: a name without '/', not '.' or '..'")
    return value
