"""Webhooks: where deliveries may go (targets) and the delivery service (delivery)."""
