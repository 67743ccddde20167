"""The public HTTP routes, one module per resource: events, state, delete, namespaces, history, admin, health."""
