"""Dataset tooling: the built-in loop-pack synthesizer, metadata discovery, sharding and inspection."""
