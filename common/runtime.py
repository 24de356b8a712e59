"""Process-level tuning shared by the long-running programs (server, device agent, bench workers)."""
import gc
import os


def freeze_long_lived() -> None:
    """Exempt every object alive now from garbage collection; call once set-up is done.

    torch, the models, catalogs, heads and datasets live as long as the process. Left in the
    collector's oldest generation, each full collection walked all of them: 0.1-0.2 s pauses on a
    2-core VM, which showed up as head downloads taking twice their time and as p99 latency.
    """
    gc.collect()
    gc.freeze()


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (a cpuset, `taskset`), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:                      # no sched_getaffinity (macOS)
        return os.cpu_count() or 1
