"""Keep freed memory in the process instead of handing it back to the OS.

glibc serves every allocation above 32 MB with its own mmap and unmaps it on free, so each
big tensor a CPU run makes (a decoder's 128 × 370 k activations are 190 MB) is faulted in
page by page, zeroed by the kernel, and given back: on a 2-core CPU that costs as much as
the arithmetic (BENCHMARKS.md, "Loop speed"). PyTorch's CPU tuning guide recommends
jemalloc or tcmalloc for this; glibc's own switches do it with nothing to install: no
mmap for big blocks, no trimming of the heap's top, so a freed block is reused as is.
The price is that the process keeps its peak memory until it exits, which a command
that trains or generates holds anyway.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}  # glibc's own
_REUSE = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_MMAP_MAX: 0}


def reuse_freed_memory(on: bool = True) -> bool:
    """Switch glibc's malloc to reuse freed blocks (see the module docstring), or back to its
    defaults (handing what it kept back to the OS); False where the C library is not glibc
    (macOS, musl), which keep their own policies."""
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on: no search, no subprocess
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version  # glibc only: other libcs' mallopt differ
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = all(mallopt(option, value) for option, value in (_REUSE if on else _DEFAULTS).items())
    if not on:
        libc.malloc_trim(0)
    return done
