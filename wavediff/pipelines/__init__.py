"""Multi-stage jobs on top of everything: the CPU demo and fine-tuning on a pack (which shard with data_tools)."""
