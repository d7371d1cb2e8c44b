"""One training run per run folder: an OS lock on RUN/run.lock, held while the run trains.

Two runs in one folder would clear each other's staging folders and overwrite each other's
checkpoints, so the second is refused at once, with the holder (pid, host, start) that the
lock file names. The lock is a POSIX record lock (fcntl.lockf), which the kernel (or the NFS
server, once the holder's lease lapses) drops when the holding process dies however it dies,
so a run killed without a word, or a SLURM job requeued after its node failed, leaves nothing
to clean up by hand: the next run takes the folder over and says whose lock it was. A record
lock rather than flock: flock belongs to the open file, which forked DataLoader workers share,
so a worker outliving a killed run for a few seconds would still hold the folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from wavediff.errors import UserError

LOCK_FILE = "run.lock"


def _describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"


def _read(fd: int) -> dict[str, Any] | None:
    """The holder the lock file names, read through `fd` (closing another descriptor of the file
    would drop this process's record locks on it)."""
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": "?", "host": f"? (unreadable lock file: {text[:40]!r})"}
    return holder if isinstance(holder, dict) else None


class RunLock:
    """The lock on a run folder, taken on construction (UserError if another process holds it).

    `previous` is the holder a run that died without releasing the lock left in the file, or None.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK_FILE
        self.previous: dict[str, Any] | None = None
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            held = e.errno in (errno.EACCES, errno.EAGAIN)
            holder = _read(self._fd) if held else None
            self._close()
            if held:
                who = _describe(holder) if holder else "it has not written its name yet"
                raise UserError(
                    f"{run_dir}: another run trains in this folder ({who}); two runs would overwrite each "
                    "other's checkpoints: wait for it to end, stop it, or train into another --out"
                ) from None
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            print(
                f"warning: {self.path}: the filesystem cannot lock files ({e.strerror}): nothing stops a second run "
                "in this folder",
                file=sys.stderr,
                flush=True,
            )
            return
        self.previous = _read(self._fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(me) + "\n").encode(), 0)

    def takeover(self) -> str | None:
        """A line saying whose lock was taken over, when its run ended without releasing it."""
        if self.previous is None:
            return None
        return (
            f"{self.path.parent}: the run that held it ({_describe(self.previous)}) ended without "
            "releasing it (killed, or its node lost): taking over"
        )

    def release(self) -> None:
        """Empty the file (a released lock names no one) and drop the lock; idempotent."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None
