"""Flux on Kafka: the publisher, compacted logs (namespaces, idempotency keys), topic checks, the
clients' security options, and explaining a cluster that refuses us (``broker_check``)."""
