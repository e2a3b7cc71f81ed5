"""Confining source paths to configured roots.

The service indexes paths that users name, so every path it opens must lie inside one of
the operator's ``allowed_roots``. A path is judged by where it really leads: ``..`` parts
and symlinks are resolved first, so neither can step outside a root. ``None`` as the roots
means "no confinement" (the CLI run by the machine's own user).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import InvalidInputError

Roots = Sequence[str | os.PathLike] | None


class PathNotAllowedError(InvalidInputError):
    """A path leads outside every allowed root (directly, through '..' or through a symlink)."""


class NotRegularFileError(OSError):
    """A path inside the roots is a folder, a device, a FIFO or a socket, not a file to read."""


# Linux names the file behind an open descriptor here: judging the open file itself costs one
# readlink instead of a lstat per path component, and no symlink swapped in meanwhile can fool it.
_FD_PATHS = os.path.isdir("/proc/self/fd")


def normalise_roots(roots: Roots) -> tuple[Path, ...] | None:
    """Resolved root folders, or None when confinement is off. Roots must exist."""
    if roots is None:
        return None
    resolved = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ValueError(f"allowed root {str(root)!r} is not a folder")
        resolved.append(path.resolve(strict=True))
    return tuple(resolved)


class Confinement:
    """Checks paths against a fixed set of roots (resolved once, reused for every path).

    A path outside every root is refused by its name first, before the filesystem is touched,
    and then by where it really leads; both refusals read the same, so the answer never tells
    whether something exists outside the roots, nor where a symlink points.
    """

    def __init__(self, roots: Roots):
        self.roots = normalise_roots(roots)
        # a root may be named through a symlink: accept paths named under either form
        self._named_roots = None if roots is None else tuple(dict.fromkeys(
            [Path(os.path.abspath(Path(root).expanduser())) for root in roots] + list(self.roots)))
        # the same as strings, for the per-file checks of a job (PurePath operations cost more)
        self._named_prefixes = None if roots is None else _prefixes(self._named_roots)
        self._real_prefixes = None if roots is None else _prefixes(self.roots)

    @property
    def enabled(self) -> bool:
        return self.roots is not None

    def _outside(self, given: str | Path) -> PathNotAllowedError:
        return PathNotAllowedError(f"{given} is outside the allowed roots; allowed: {', '.join(map(str, self.roots))}")

    def check_name(self, path: str | os.PathLike) -> Path:
        """``path`` made absolute with '..' collapsed, without touching the filesystem.

        Raises ``PathNotAllowedError`` when, by its name alone, it does not lie inside a root.
        ``resolve`` then checks where it really leads.
        """
        return Path(self._checked_name(os.path.expanduser(os.fspath(path))))

    def _checked_name(self, given: str) -> str:
        named = os.path.normpath(os.path.abspath(given))
        if self.roots is not None and not _under(named, self._named_prefixes):
            raise self._outside(given)
        return named

    def resolve(self, path: str | os.PathLike) -> Path:
        """The real path of ``path``, checked to lie inside a root.

        Raises ``PathNotAllowedError`` when it escapes them (directly, through '..' or a
        symlink) or cannot be looked at, and ``FileNotFoundError`` when it does not exist
        (only ever for a path inside the roots).
        """
        given = Path(path).expanduser()
        self.check_name(given)
        try:
            real = given.resolve(strict=True)
        except FileNotFoundError:
            if self.roots is not None and not self._inside(given.resolve(strict=False)):
                raise self._outside(given) from None  # a dangling symlink out of the roots: not told either
            raise FileNotFoundError(f"{given}: no such file or folder") from None
        except RuntimeError as error:  # symlink loop
            raise PathNotAllowedError(f"{given}: {error}") from None
        except OSError as error:  # e.g. PermissionError on a folder on the way
            raise PathNotAllowedError(f"{given}: cannot be read ({error.strerror or error})") from None
        if self.roots is None:
            return real
        if not self._inside(real):
            raise self._outside(given)  # the same words as by name: the target is not told
        return real

    def open_file(self, path: str | os.PathLike) -> BinaryIO:
        """``path`` opened for reading in binary: a regular file that really lies inside a root.

        Refuses as ``resolve`` does (the same errors and words), and a folder, device, FIFO or
        socket with ``NotRegularFileError`` before reading from it (a FIFO is never waited on).
        Where ``/proc/self/fd`` exists the file is opened first and judged by where the open
        descriptor really leads, so it is the file read that was checked (no window between a
        check and the open); elsewhere the path is resolved and then opened.
        """
        given = os.path.expanduser(os.fspath(path))
        self._checked_name(given)  # refused by name before the filesystem is touched
        if self.roots is None:
            return _open_regular(given, given)
        if not _FD_PATHS:
            return _open_regular(self.resolve(given), given)
        try:
            regular = stat.S_ISREG(os.stat(given).st_mode)
            fd = os.open(given, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC) if regular else None
        except OSError as error:
            self.resolve(given)  # raises what resolve would (missing, outside, a loop), in its words
            raise PathNotAllowedError(f"{given}: cannot be read ({error.strerror or error})") from None
        if fd is None:
            self.resolve(given)  # outside the roots through a symlink: told as outside, not as "not a file"
            raise NotRegularFileError(f"{given}: not a regular file")
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")  # where the open file really is
        except OSError as error:
            os.close(fd)
            raise PathNotAllowedError(f"{given}: cannot be judged ({error.strerror or error})") from None
        return _file_of(fd, given, None if _under(real, self._real_prefixes) else self._outside(given))

    def _inside(self, real: Path) -> bool:
        return _under(str(real), self._real_prefixes)


def _prefixes(roots: Sequence[Path]) -> tuple[tuple[str, str], ...]:
    return tuple((str(root), str(root).rstrip(os.sep) + os.sep) for root in roots)


def _under(path: str, prefixes: tuple[tuple[str, str], ...]) -> bool:
    """Whether a normalised absolute path is a root or lies below one (``Path.is_relative_to``, on strings)."""
    return any(path == root or path.startswith(below) for root, below in prefixes)


def _open_regular(real: str | Path, given: str) -> BinaryIO:
    """Open a path for reading, refusing anything but a regular file before reading it."""
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):
            raise NotRegularFileError(f"{given}: not a regular file")
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(f"{given}: no such file or folder") from None
    return _file_of(fd, given)


def _file_of(fd: int, given: str, refusal: Exception | None = None) -> BinaryIO:
    """A file object for ``fd`` opened non-blocking, or ``fd`` closed and a refusal raised: ``refusal``
    when given, else when it is not a regular file (swapped since the stat)."""
    try:
        if refusal is not None:
            raise refusal
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(f"{given}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def confine(path: str | os.PathLike, roots: Roots) -> Path:
    """One-off ``Confinement(roots).resolve(path)``."""
    return Confinement(roots).resolve(path)
