"""The training loop's position and running sums (saved in train_state.safetensors), and the
deferred handling of Ctrl-C / SIGTERM that keeps a saved state exact."""
from __future__ import annotations

import dataclasses
import signal
import threading
from dataclasses import dataclass, field


@dataclass
class Tally:
    """Sums over the steps of a log interval or an epoch."""

    loss_sum: float = 0.0  # batch mean loss x batch size, summed
    correct: int = 0
    seen: int = 0

    def add(self, mean_loss: float, correct: int, n: int) -> None:
        self.loss_sum += mean_loss * n
        self.correct += correct
        self.seen += n

    @property
    def loss(self) -> float:
        return self.loss_sum / self.seen

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen


@dataclass
class RunState:
    """Where a run is: `batch` counts within the epoch, `step` over the whole run."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    metrics: list[dict] = field(default_factory=list)
    interval: Tally = field(default_factory=Tally)
    running: Tally = field(default_factory=Tally)
    train_accuracy: float | None = None

    def to_json(self) -> dict:
        """Plain JSON for the checkpoint's metadata; tallies as [loss sum, correct, seen]."""
        values = dataclasses.asdict(self)
        for name in ("interval", "running"):
            tally = getattr(self, name)
            values[name] = [tally.loss_sum, tally.correct, tally.seen]
        return values

    @classmethod
    def from_json(cls, values: dict) -> "RunState":
        return cls(**{**values, "interval": Tally(*values["interval"]), "running": Tally(*values["running"])})

    def next_epoch(self) -> None:
        self.epoch, self.batch, self.interval, self.running = self.epoch + 1, 0, Tally(), Tally()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DeferredInterrupt:
    """Ctrl-C (SIGINT) and SIGTERM (what `kill`, schedulers and torchrun send) set a flag that the
    loop checks between steps, so the saved state is never caught halfway through a step
    (weights updated, counters not): resume stays exact. `signum` is the signal received (0: none)."""

    def __init__(self) -> None:
        self.signum = 0
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._request)

    def _request(self, signum, frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


class Interrupted(Exception):
    """Raised between steps once every worker agreed to stop; carries the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def exit_status(stop: BaseException) -> int:
    """The shell's exit status for a stop: 128 + the signal (130 Ctrl-C, 143 SIGTERM); a bare
    KeyboardInterrupt (no handler of ours installed) counts as SIGINT."""
    return 128 + getattr(stop, "signum", signal.SIGINT)
