"""torch.distributed plumbing of the pipeline engine: who owns which stage, what goes over the wire, and how
the ranks notice that one of them has failed. Nothing here knows about local-learning methods."""
