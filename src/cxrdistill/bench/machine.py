"""The machine a benchmark ran on, as Markdown list lines (CPU, cores, memory, GPU, Python, torch and its threads)."""
from __future__ import annotations

import os
import platform


def machine() -> list[str]:
    import torch

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return [f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem}; GPU: "
            f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}",
            f"- Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{platform.platform()}"]
