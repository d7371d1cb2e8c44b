"""Every nn.Module (autoencoder, U-Net, LoopDiffusion, conditioner, classifier, discriminator, LoRA),
the losses, and the checkpoint folders with the one factory that rebuilds any checkpoint kind."""
