"""Live changes: the change relay (a Kafka consumer of the change feed), what has been applied (for
``?wait=true``), and WebSocket subscriptions and their fan-out."""
