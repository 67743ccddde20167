"""A node's processes: the reducer process and the HTTP processes serving ``FLUX_PORT`` (docs/architecture.md)."""
