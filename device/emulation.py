"""A slower board emulated on this machine: the device's work stretched to the board's MAC rate.

`qpart-device --emulate-speed` and the testbed's devices run heads (and preprocessing and encoding, which the
planner prices in MAC-equivalents of this machine's speed) as long as they take on the board they stand for;
never faster than this machine runs them. Figures from an emulated run say so.
"""
import time

from qpart.device import backends


def pacing_seconds(macs: int, macs_per_second: float, elapsed_s: float) -> float:
    """How long to wait after a head run of `macs` MACs that took elapsed_s, for it to take as long as on a
    board of macs_per_second (0 when this machine was slower still: emulation never speeds anything up)."""
    return max(macs / macs_per_second - elapsed_s, 0.0)


class BoardEmulation:
    """Stretches the device's work to a board of `macs_per_second`."""

    def __init__(self, macs_per_second: float):
        self.macs_per_second = macs_per_second     # the board's MAC rate
        self._host = 0.0                           # this machine's rate (torch's linear layer, else numpy's product)

    def head(self, macs: int, started: float) -> None:
        """After a head run of `macs` MACs that began at `started` (perf_counter): wait out the board's time."""
        time.sleep(pacing_seconds(macs, self.macs_per_second, time.perf_counter() - started))

    def work(self, started: float) -> None:
        """After other work that began at `started` (preprocessing, encoding): its seconds here, in this machine's
        MAC-equivalents, at the board's rate."""
        elapsed = time.perf_counter() - started
        time.sleep(pacing_seconds(elapsed * self.host_macs_per_second(), self.macs_per_second, elapsed))

    def host_macs_per_second(self) -> float:
        """This machine's MAC rate as the server measures its own (torch where installed, else numpy): the rate
        the planner converts encoding seconds to MAC-equivalents at."""
        if not self._host:
            try:
                from qpart.common import torchnet
                self._host = torchnet.mac_rate()
            except ImportError:
                self._host = backends.mac_rate("numpy")
        return self._host
