"""What machine a measurement ran on: every time this project reports names the CPU next to it."""
import os
import platform
import re


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (e.g. 'Intel(R) Xeon(R) Processor'), else what platform knows."""
    try:
        with open('/proc/cpuinfo') as f:
            match = re.search(r'^model name\s*:\s*(.+)$', f.read(), re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


# Environment variables that change how the process gets memory, and with it the time of every fresh large tensor
# (page faults): glibc's malloc thresholds, a preloaded allocator (jemalloc, tcmalloc), PyTorch's huge pages.
ALLOCATOR_VARIABLES = ('LD_PRELOAD', 'GLIBC_TUNABLES', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
                       'MALLOC_TOP_PAD_', 'MALLOC_ARENA_MAX', 'THP_MEM_ALLOC_ENABLE')


def allocator_description() -> str:
    """The memory allocator settings of this process's environment, or the default (glibc malloc as configured)."""
    settings = [f'{name}={os.environ[name]}' for name in ALLOCATOR_VARIABLES if os.environ.get(name)]
    return ', '.join(settings) if settings else 'default (no allocator variable set)'


def machine_line(threads: int) -> str:
    """One line for a report: CPU, logical CPUs, torch and its intra-op threads, Python, OS, memory allocator."""
    import torch
    return (f'{cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} (intra-op threads {threads}), '
            f'Python {platform.python_version()}, {platform.system()} {platform.release()}, '
            f'allocator: {allocator_description()}')
