"""Flux's Faust side: the app, the entity table, and the agent that folds events into it."""
