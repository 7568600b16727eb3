"""Engines that run a LocalLearner's stages, and the Trainer that drives them over epochs."""
