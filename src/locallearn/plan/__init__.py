"""Memory planning: predict a run's peak from costs measured once on small batches, and fit K to a budget."""
