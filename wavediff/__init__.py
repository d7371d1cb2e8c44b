"""wavediff: waveform latent-diffusion models that make loops of electronic music (see ARCHITECTURE.md)."""
