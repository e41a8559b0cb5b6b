"""``train.time``: fit a run's optimizer steps and validations into a wall-clock budget.

Ultralytics' ``time=`` recomputes the epoch count after every epoch; here the plan is in
optimizer steps, so the learning-rate schedule (warm-up, cosine or one-cycle) is laid over the
budget and ends exactly at its final value, and the last epoch may be partial. The Trainer trains
a few steps on the provisional schedule, measures the step time (the first step, which pays for
loader start-up and allocation, is left out) and estimates one validation, then fixes the total
step count and how often to validate. The plan is corrected only when the measured pace says the
run would end more than ``tolerance`` of the budget early or ``overrun`` of it late (another job
started on the machine, validation got slower as detections appeared), checked at every epoch end
and every tenth of the planned steps. A budget is a promise to end by it, so a late end is
corrected sooner (``overrun``, 1 % of the budget) than an early one (``tolerance``, 3 %): 3 %
both ways let a 1,020 s run end at 1,050 s. Everything is kept in seconds of *this run's* time,
carried across ``resume``.

Pure bookkeeping with an injectable clock, so the planning is tested without timing anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

# Validation may take at most this share of the budget; past it, validate every few epochs
# (the last epoch always validates).
VAL_SHARE = 0.1


@dataclass
class Plan:
    total_steps: int  # optimizer steps of the whole run
    val_every: int  # validate every N epochs (and after the last)
    step_s: float  # measured seconds per optimizer step (data wait included)
    val_s: float  # seconds of one validation
    overhead_s: float  # seconds per epoch outside steps and validation (checkpoint, plots)

    def epochs(self, steps_per_epoch: int) -> int:
        return math.ceil(self.total_steps / steps_per_epoch)


class TimeBudget:
    def __init__(
        self,
        seconds: float,
        steps_per_epoch: int,
        min_val_every: int = 1,
        measure_steps: int = 8,
        tolerance: float = 0.03,
        overrun: float = 0.01,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.seconds = float(seconds)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.min_val_every = max(1, min_val_every)
        self.measure_steps = max(2, measure_steps)
        self.tolerance = tolerance
        self.overrun = min(overrun, tolerance)
        self.clock = clock
        self.plan: Plan | None = None
        self.spent = 0.0  # seconds of earlier processes (resume)
        self._origin = clock()
        # The pace: seconds between consecutive steps of one epoch (the gap across an epoch end
        # is validation and bookkeeping, accounted separately), older epochs weighing less.
        self._last: tuple[int, float] | None = None  # (steps done, elapsed) at the last step
        self._seconds = 0.0
        self._steps = 0.0
        self.replans = 0

    # ---- time -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start this process's clock (``fit``); time spent by earlier processes is kept."""
        self._origin = self.clock()

    def elapsed(self) -> float:
        """Seconds of this run so far, earlier processes of a resumed run included."""
        return self.spent + self.clock() - self._origin

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    # ---- measurement and planning -------------------------------------------------------------
    def step_done(self, steps: int) -> None:
        """Record that ``steps`` optimizer steps are done now."""
        now = self.elapsed()
        if self._last is not None:
            self._seconds += now - self._last[1]
            self._steps += steps - self._last[0]
        self._last = (steps, now)

    def pause(self) -> None:
        """An epoch ended: the next step's gap is not a step. Earlier epochs count half from
        here on, so the pace follows a machine whose speed changes."""
        self._last = None
        self._seconds /= 2
        self._steps /= 2

    def can_measure(self) -> bool:
        """A pace exists: two consecutive steps of one epoch were recorded."""
        return self._steps > 0

    def ready_to_plan(self) -> bool:
        """Enough steps timed (the first of an epoch, which pays loader start-up, excluded)."""
        return self.plan is None and self._steps >= self.measure_steps

    def pace(self) -> float:
        """Seconds per optimizer step."""
        return self._seconds / self._steps if self._steps else 0.0

    def make_plan(
        self,
        steps_done: int,
        epochs_done: int,
        val_s: float,
        overhead_s: float = 0.0,
        step_s: float | None = None,
    ) -> Plan:
        """Fix the total step count so that the steps still to go, the validations and the
        per-epoch overhead end at the budget; ``val_every`` keeps validation within
        ``VAL_SHARE`` of it."""
        step_s = self.pace() if step_s is None else step_s
        step_s = max(step_s, 1e-6)
        spe = self.steps_per_epoch
        remaining = self.remaining()
        # A validation costs ~val_s; allow as many as fit into VAL_SHARE of the whole budget.
        allowed_vals = max(1, int(VAL_SHARE * self.seconds / max(val_s, 1e-6)))
        to_go = max(0.0, remaining / step_s)
        val_every = self.min_val_every
        for _ in range(4):  # the counts depend on each other: a few rounds settle them
            epochs_total = max(epochs_done + 1, math.ceil((steps_done + to_go) / spe))
            val_every = max(self.min_val_every, math.ceil(epochs_total / allowed_vals))
            epochs_to_go = max(1, epochs_total - epochs_done)
            vals_to_go = epochs_to_go // val_every + (epochs_to_go % val_every != 0)
            spare = remaining - vals_to_go * val_s - epochs_to_go * overhead_s
            to_go = max(0.0, spare / step_s)
        # At least one more step: a run past its budget still ends on a validated epoch.
        total = steps_done + max(1, int(to_go))
        self.plan = Plan(total, val_every, step_s, val_s, overhead_s)
        return self.plan

    def projected_end(self, steps_done: int, epochs_done: int) -> float:
        """Seconds into the run at which the plan would end at the current pace."""
        plan = self.plan
        assert plan is not None
        step_s = self.pace() if self.can_measure() else plan.step_s
        spe = self.steps_per_epoch
        epochs_total = plan.epochs(spe)
        # Epochs not closed yet (the one under way included) still pay validation and overhead.
        epochs_to_go = max(0, epochs_total - epochs_done)
        vals_to_go = sum(
            1
            for e in range(epochs_done + 1, epochs_total + 1)
            if e % plan.val_every == 0 or e == epochs_total
        )
        steps_to_go = max(0, plan.total_steps - steps_done)
        return (
            self.elapsed()
            + steps_to_go * step_s
            + vals_to_go * plan.val_s
            + epochs_to_go * plan.overhead_s
        )

    def check(
        self,
        steps_done: int,
        epochs_done: int,
        val_s: float | None = None,
        overhead_s: float | None = None,
    ) -> Plan | None:
        """Re-plan when the projected end is more than ``tolerance`` of the budget early or
        ``overrun`` of it late; the new plan, or None when the current one holds. Measured
        validation/overhead times replace the estimates first."""
        plan = self.plan
        if plan is None or steps_done >= plan.total_steps:
            return None
        # Measured values are averaged in: one slow checkpoint write is not a trend.
        if val_s is not None:
            plan.val_s = (plan.val_s + val_s) / 2 if plan.val_s else val_s
        if overhead_s is not None:
            plan.overhead_s = (plan.overhead_s + overhead_s) / 2 if plan.overhead_s else overhead_s
        end = self.projected_end(steps_done, epochs_done)
        if -self.tolerance * self.seconds <= end - self.seconds <= self.overrun * self.seconds:
            return None
        step_s = self.pace() if self.can_measure() else plan.step_s
        self.replans += 1
        return self.make_plan(steps_done, epochs_done, plan.val_s, plan.overhead_s, step_s)

    # ---- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "elapsed": self.elapsed(),
            "plan": asdict(self.plan) if self.plan else None,
            "replans": self.replans,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue a saved run: its time spent and its plan (the budget is the saved one
        unless the config now gives another)."""
        self.spent = float(state["elapsed"])
        self._origin = self.clock()
        self.plan = Plan(**state["plan"]) if state.get("plan") else None
        self.replans = int(state.get("replans", 0))
        self._last, self._seconds, self._steps = None, 0.0, 0.0
