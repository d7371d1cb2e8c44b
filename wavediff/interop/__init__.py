"""Weights from other tools: stable-audio-tools' autoencoders (import and export) and Dance
Diffusion's denoisers, converted to and from wavediff checkpoints. Nothing here downloads anything."""
