"""Replays: jobs started over HTTP (``jobs``), worker processes folding the events topic into a new
generation (``worker``, ``shadow_store``), and the switch of the live table to it (``switch``)."""
