"""The preview decoder: a narrow copy of an autoencoder's decoder, trained to match it (`wavediff
train-preview`), in the spirit of the "tiny autoencoder" image models use for live previews.

It decodes the same latents at the same hop to the same channels, and its convolutions are the
full decoder's, only narrower: its reach (decoder_context) is the same, so a loop decodes
seamlessly through LoopDiffusion.decode exactly as with the full decoder.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from wavediff.config import AutoencoderConfig, PreviewConfig
from wavediff.models.autoencoder import LatentDecoding, build_decoder, check_config


def preview_config(autoencoder: AutoencoderConfig, size: PreviewConfig) -> AutoencoderConfig:
    """The autoencoder's config at the preview's widths (the decoder build_decoder makes of it)."""
    mults = size.channel_mults or autoencoder.channel_mults
    return dataclasses.replace(autoencoder, base_channels=size.base_channels, channel_mults=list(mults))


class PreviewDecoder(LatentDecoding, nn.Module):
    """Latents → audio like `autoencoder`'s decoder, at the widths `size` gives."""

    def __init__(self, autoencoder: AutoencoderConfig, size: PreviewConfig) -> None:
        super().__init__()
        self.cfg = preview_config(autoencoder, size)
        check_config(self.cfg)
        self.decoder = build_decoder(self.cfg)

    def forward(self, z: Tensor, length: int | None = None) -> Tensor:
        return self.decode(z, length)
