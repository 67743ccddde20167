"""The entity table: its RocksDB stores as Faust keeps them (``store``), bringing a newly assigned
partition up to its changelog's end fast (``restore``), and warm standby copies (``standby``)."""
