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


def machine_line(threads: int) -> str:
    """One line for a report: CPU, logical CPUs, torch and its intra-op threads, Python, OS."""
    import torch
    return (f'{cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} (intra-op threads {threads}), '
            f'Python {platform.python_version()}, {platform.system()} {platform.release()}')
