"""The one Accelerate engine (which knows nothing of shards) and one objective per model."""
