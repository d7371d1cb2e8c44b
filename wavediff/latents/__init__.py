"""Audio shards to latent shards with a trained autoencoder (`wavediff encode`)."""
