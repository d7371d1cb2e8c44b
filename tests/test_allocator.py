"""wavediff.allocator: a freed big tensor's memory stays in the process for the next one."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, os, sys
import torch
from wavediff.allocator import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
for mode in sys.argv[1:]:
    assert reuse_freed_memory(mode == "on")
    x = torch.empty(64 * 2**20, dtype=torch.uint8)
    x.fill_(1)
    del x
    resident = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(libc.mallinfo2().fordblks, resident)  # bytes free inside the heap for reuse; the process's RSS
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the switches are glibc's")
def test_a_freed_big_tensor_stays_for_reuse_only_when_switched_on() -> None:
    modes = ["off", "on", "off"]  # glibc's defaults, switched on, and back
    done = subprocess.run([sys.executable, "-c", PROBE, *modes], capture_output=True, text=True, check=True)
    rows = [map(int, line.split()) for line in done.stdout.splitlines()]
    (free_off, rss_off), (free_on, rss_on), (_, rss_back) = rows
    assert free_off < 64 * 2**20  # glibc's default: unmapped on free
    assert free_on >= 64 * 2**20 and rss_on >= rss_off + 60 * 2**20  # kept, pages and all: no faults next time
    assert rss_back <= rss_on - 60 * 2**20  # switched back: the pages go back to the OS


def test_the_cli_switches_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import wavediff.cli as cli

    calls = []
    monkeypatch.setattr(cli, "reuse_freed_memory", lambda: calls.append(True) or True)
    with pytest.raises(SystemExit):  # --help exits through argparse, after the switch
        cli.main(["--help"])
    assert calls
