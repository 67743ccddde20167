"""The pure core: the event envelope and its validation, the merge (reducer), the encodings of
changes, history keys and Kafka records, partitioning, ids, replay ranges, and the ports (``state``)
through which the HTTP side reads. No module here does I/O."""
