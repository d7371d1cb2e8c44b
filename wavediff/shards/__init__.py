"""The shard format: its contract (names, manifest), the one writer, the training loader and a whole-sample reader."""
