"""Swapping a finished set of files into a folder so that a kill at any instant loses nothing.

Deleting the old files and then moving the new ones in leaves neither dataset when the job is
killed between the two. So the files the new set replaces are first moved aside, into
`OUT/.swap-<host>-<pid>/`, after a journal there that names them; then the new files go in,
the manifest last: that rename is the commit. Then the aside folder goes. A swap whose job was
killed is settled by `recover`: before the commit it is rolled back (the old files return, the
new ones leave), after it the old files are dropped. The next job writing into OUT and the next
reader of its manifest call it, so the previous dataset is back before anyone looks.

The state is read from the files themselves: the old manifest is the first file moved aside
and the last one moved back, so while a swap is unsettled OUT holds a manifest only before any
file moved (the old one) or after the commit (the new one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from wavediff.errors import UserError
from wavediff.io.files import atomic_write_json, read_json_object

JOURNAL = "swap.json"  # {"manifest": name, "incoming": [names], "outgoing": [names, the manifest first]}
PREFIX = ".swap-"


def host_tag() -> str:
    """This host's name as it appears in staging and swap folder names (no dashes)."""
    return socket.gethostname().replace("-", "_")


def alive(pid: int) -> bool:
    """Whether process `pid` (of this host) is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def swap_in(staging: Path, out: Path, manifest: str, stale: Callable[[str], bool]) -> None:
    """Move every file of `staging` into `out`, `manifest` last, replacing the files of the
    same names and those `stale` names; safe against a kill at any instant (module docstring).
    An exception midway rolls the swap back before it propagates."""
    incoming = sorted(p.name for p in staging.iterdir() if p.name != manifest)
    replaced = set(incoming)
    outgoing = [manifest] if (out / manifest).is_file() else []
    outgoing += sorted(
        p.name for p in out.iterdir() if p.is_file() and p.name != manifest and (p.name in replaced or stale(p.name))
    )
    aside = out / f"{PREFIX}{host_tag()}-{os.getpid()}"
    aside.mkdir()
    try:
        atomic_write_json(aside / JOURNAL, {"manifest": manifest, "incoming": incoming, "outgoing": outgoing})
        _fsync(aside)
        for name in outgoing:
            os.replace(out / name, aside / name)
        _fsync(aside)
        _fsync(out)
        for name in incoming:
            os.replace(staging / name, out / name)
        _fsync(out)
        os.replace(staging / manifest, out / manifest)  # the commit
        _fsync(out)
    finally:
        _settle(out, aside)


def recover(out: str | os.PathLike) -> None:
    """Settle the swaps into `out` that jobs on this host were killed in (module docstring);
    swaps of running jobs, and of other hosts (whose jobs this one cannot see), are left."""
    out = Path(out)
    for aside in sorted(out.glob(f"{PREFIX}{host_tag()}-*")):
        pid = aside.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not alive(int(pid)):
            _settle(out, aside)


def unsettled(out: str | os.PathLike) -> list[Path]:
    """The swap folders in `out` that are still there: jobs swapping now, or killed on another host."""
    return sorted(Path(out).glob(f"{PREFIX}*"))


def _settle(out: Path, aside: Path) -> None:
    """Finish the swap that `aside` records: roll it back if its manifest was not committed,
    then drop the folder. Safe to repeat after a kill at any point; recoveries running at once
    (a reader and the next job) take turns, and the later one finds the work done."""
    try:
        fd = os.open(aside, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        journal = aside / JOURNAL
        if journal.is_file():
            _roll_back_uncommitted(out, aside, journal)
            journal.unlink()  # first: without it, what is left aside is only old files
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        os.close(fd)


def _roll_back_uncommitted(out: Path, aside: Path, journal: Path) -> None:
    """Unless the swap's manifest was committed: the new files out, the old ones back, the manifest last."""
    plan = read_json_object(journal, "swap journal")
    manifest, incoming, outgoing = plan.get("manifest"), plan.get("incoming"), plan.get("outgoing")
    if not (isinstance(manifest, str) and isinstance(incoming, list) and isinstance(outgoing, list)):
        raise UserError(f"{journal}: not a swap journal; the files it moved aside are in {aside}")
    if (out / manifest).is_file() and (manifest not in outgoing or (aside / manifest).is_file()):
        return  # committed: the new set is whole, what is aside is the old one
    for name in set(incoming) - set(outgoing):
        (out / name).unlink(missing_ok=True)
    for name in sorted(outgoing, key=lambda name: name == manifest):  # the manifest last
        with contextlib.suppress(FileNotFoundError):  # never moved aside: still in place
            os.replace(aside / name, out / name)
    _fsync(out)


def _fsync(folder: Path) -> None:
    """Make the renames in `folder` durable, in order."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
