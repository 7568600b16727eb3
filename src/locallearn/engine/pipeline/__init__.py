"""Training under torchrun: the stages a rank owns (pipeline positions x data-parallel replicas), what goes
over the wire between ranks, and how the ranks notice that one of them has failed. `run.py` launches and
checkpoints, `transport.py` and `plan.py` move what a step needs; the other modules know nothing about
local-learning methods."""
