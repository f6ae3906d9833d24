"""Field-device simulator and load generator (`siaga simulate`).

- `run_day()` plays a realistic election day of the Serang demo against any ingest URL, sped up
  onto the real clock: check-ins, TPS phases, everyday incidents written as officers write them,
  morning floods, a serangan fajar cluster, a clash that needs backup, a critical one, devices that
  go offline and flush a backlog, posts that fall silent.
- `run_load()` posts a steady rate of events and reports the achieved rate, latency and errors.
- `add_simulate_parser()` / `run_simulate()` put both on the command line.
"""

from siaga.simulator.cli import add_simulate_parser, run_simulate
from siaga.simulator.day import SimStats, run_day
from siaga.simulator.load import LoadStats, run_load

__all__ = ["LoadStats", "SimStats", "add_simulate_parser", "run_day", "run_load", "run_simulate"]
