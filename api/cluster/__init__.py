"""Several nodes answering as one: forwarding a read to the node serving an entity, gathering reads
that span every node's partitions, and the internal endpoints those use."""
