"""``kind: ingest`` and ``kind: synthetic``: public dataset files or generated rows -> sample shards."""
