"""Rebuild the small example files in examples/ (run by `make examples`)."""
from pathlib import Path

from distillguard.training.simulate import SimConfig, simulate, write

out = Path(__file__).resolve().parent.parent / "examples"
events, labels = simulate(SimConfig(seed=5, accounts=80, days=1.5))
write(events, labels, out, fmt="csv")
# A few requests carrying raw prompt text instead of a hash: distillguard hashes and drops it on read.
ev, _ = simulate(SimConfig(seed=6, accounts=8, days=1.0, include_prompts=True))
ev = ev.drop(columns=["template_hash", "elicits_reasoning"]).head(40)
ev.to_csv(out / "events_with_prompts.csv", index=False)
print(f"examples: {len(events)} events, {len(labels)} accounts; {len(ev)} rows with prompts")
