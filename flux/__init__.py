"""Flux core: configuration, the event envelope, the pure merge reducer and Kafka plumbing.

This package imports neither ``agents`` (Faust) nor ``api`` (FastAPI); both import it.
"""

__version__ = "0.1.0"
