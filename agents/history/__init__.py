"""The history index beside the table: reading it (``store``) and re-deriving it from the events
topic when a partition arrives without it (``rebuild``)."""
