"""Flux's HTTP front end (FastAPI): routes, request parsing, errors, and the process entry point."""
