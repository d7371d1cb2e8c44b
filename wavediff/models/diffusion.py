"""The latent-diffusion model a denoiser checkpoint holds: U-Net + conditioner + the frozen autoencoder.

Preconditioning is k-diffusion's: `Denoiser` (Karras et al.) or `VDenoiser` (v-diffusion)
supply c_skip, c_out, c_in and the loss weighting, so every k-diffusion sampler drives
either kind through the same `denoise(x, σ)` call. The network sees c_noise = ln σ / 4
(Karras) or t = atan σ · 2/π (v), the inputs its objective was trained with.

The model works on data divided by `sigma_data` (measured from the training latents), or
with `diffusion.normalize = "channel"` on each latent channel less its mean over its own std,
so the preconditioners run with σ_data = 1 and noise levels in the recipe are in units of the
data's standard deviation: a recipe's noise settings carry over between autoencoders.

The autoencoder rides along, frozen: a checkpoint is then enough to turn noise into audio.
Without one (`recipe.autoencoder == ""`) the model diffuses raw waveforms, Dance Diffusion
style, and "decoding" is the identity.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn

from wavediff.config import DiffusionRecipe
from wavediff.errors import ConfigError
from wavediff.io.audio import resize_loop
from wavediff.models.autoencoder import Autoencoder, LatentDecoding
from wavediff.models.blocks import pad1d
from wavediff.models.conditioning import CONDITIONS, Conditioner, Conditions
from wavediff.models.dance import DanceUNet1D
from wavediff.models.unet import UNet1D

CLOCK_CHANNELS = 4  # sin/cos of the beat phase and of the bar phase


def _preconditioners() -> tuple[type, type]:
    with warnings.catch_warnings():  # k-diffusion's dependencies warn about their own imports
        warnings.simplefilter("ignore")
        from k_diffusion.external import VDenoiser
        from k_diffusion.layers import Denoiser
    return Denoiser, VDenoiser


class LoopDiffusion(nn.Module):
    """See the module docstring. `forward` is the training loss (what DDP wraps); `denoise` is what samplers call."""

    def __init__(self, recipe: DiffusionRecipe, autoencoder: Autoencoder | None = None) -> None:
        super().__init__()
        diffusion = recipe.diffusion
        if diffusion.sigma_data <= 0:
            raise ConfigError("diffusion.sigma_data must be resolved (positive) before the model is built")
        if bool(recipe.autoencoder) != (autoencoder is not None):
            raise ConfigError("recipe.autoencoder and the autoencoder given must both be set or both be empty")
        self.recipe = recipe
        self.data_channels = recipe.channels
        if autoencoder is not None and autoencoder.latent_dim != recipe.channels:
            raise ConfigError(f"channels is {recipe.channels} but the autoencoder makes {autoencoder.latent_dim}")
        if recipe.channels < 1:
            raise ConfigError("channels must be resolved (positive) before the model is built")
        shift, scale = torch.zeros(recipe.channels), torch.full((recipe.channels,), diffusion.sigma_data)
        if diffusion.normalize == "channel":
            if len(diffusion.channel_mean) != recipe.channels or len(diffusion.channel_std) != recipe.channels:
                raise ConfigError("diffusion.channel_mean/channel_std must be resolved (one per channel) first")
            shift, scale = torch.tensor(diffusion.channel_mean), torch.tensor(diffusion.channel_std)
        # model space = (data − shift) / scale, per channel; not in the state dict: the recipe holds them
        self.register_buffer("shift", shift[:, None], persistent=False)
        self.register_buffer("scale", scale[:, None], persistent=False)
        self.autoencoder = autoencoder.eval().requires_grad_(False) if autoencoder is not None else None
        cond = recipe.conditioning
        if cond.text and not recipe.model.cross_attention:
            raise ConfigError(
                "conditioning.text needs model.cross_attention = true (the prompt's tokens are attended to)"
            )
        self.conditioner = Conditioner(cond) if any(getattr(cond, name) for name in CONDITIONS) else None
        dim = self.conditioner.dim if self.conditioner is not None else 0
        token_dim = dim if recipe.model.cross_attention else 0
        self.clock = cond.tempo and cond.tempo_clock
        extra = CLOCK_CHANNELS if self.clock else 0
        network = DanceUNet1D if recipe.model.architecture == "dance-diffusion" else UNet1D
        self.unet = network(recipe.model, self.data_channels + extra, dim, token_dim, out_channels=self.data_channels)
        Denoiser, VDenoiser = _preconditioners()
        self.v_objective = diffusion.objective == "v"
        # Holders of the scalings and weightings only (no inner model, no parameters).
        self.precond = VDenoiser(None) if self.v_objective else Denoiser(None, 1.0, diffusion.weighting)

    # ----------------------------------------------------------------- audio ↔ model space

    @property
    def sample_rate(self) -> int:
        return self.recipe.sample_rate

    @property
    def hop_length(self) -> int:
        """Audio samples per model frame (1 for a waveform model)."""
        return self.autoencoder.hop_length if self.autoencoder is not None else 1

    @property
    def audio_channels(self) -> int:
        return self.autoencoder.cfg.channels if self.autoencoder is not None else self.data_channels

    @property
    def factor(self) -> int:
        """Frame-count multiple a circular (loop) generation needs."""
        return self.unet.factor

    def train(self, mode: bool = True) -> LoopDiffusion:
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen: never in training mode
        return self

    def to_model(self, data: Tensor) -> Tensor:
        """Latents (or waveforms) as stored in shards → the normalized space the model diffuses in."""
        return (data - self.shift) / self.scale

    def from_model(self, x: Tensor) -> Tensor:
        """The model's space → latents (or waveforms) as stored in shards: to_model's inverse."""
        return x * self.scale + self.shift

    @torch.no_grad()
    def encode(self, audio: Tensor, loop: bool = False) -> Tensor:
        """(B, channels, samples) audio at the model's rate → (B, data_channels, frames) in model space.

        `loop`: the audio is one period of a loop (a whole number of frames long); a non-circular
        encoder gets wrapped context, as `decode(loop=True)` does (the encoder mirrors the
        decoder, so the decoder's reach is the encoder's).
        """
        ae = self.autoencoder
        if ae is None:
            return self.to_model(audio)
        if not loop or ae.cfg.padding == "circular":
            return self.to_model(ae.encode(audio))
        hop, frames = self.hop_length, audio.shape[-1] // self.hop_length
        if audio.shape[-1] != frames * hop:
            raise ValueError(f"a loop to encode must be a whole number of {hop}-sample frames, got {audio.shape[-1]}")
        ctx = ae.decoder_context()
        return self.to_model(ae.encode(pad1d(audio, ctx * hop, ctx * hop, "circular"))[..., ctx : ctx + frames])

    @torch.no_grad()
    def decode(
        self, x: Tensor, samples: int | None = None, loop: bool = False, decoder: LatentDecoding | None = None
    ) -> Tensor:
        """Model space → audio (B, channels, frames·hop, or `samples`).

        `loop`: the frames are one period of a loop, decoded seamlessly (LatentDecoding.decode_loop).
        `decoder`: another decoder of the autoencoder's latents in its place (a preview decoder,
        models.preview), decoded the same way.
        """
        z = self.from_model(x)
        if self.autoencoder is None:
            return z if samples is None else z[..., :samples]
        decoder = decoder or self.autoencoder
        audio = decoder.decode_loop(z) if loop else decoder.decode(z)
        return audio if samples is None else audio[..., :samples]

    # ----------------------------------------------------------------- the denoiser

    def _noise_input(self, sigma: Tensor) -> Tensor:
        return self.precond.sigma_to_t(sigma) if self.v_objective else sigma.log() / 4

    def _network(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: Conditions | None,
        drop: Tensor | None,
        circular: bool,
        period: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(network output, c_skip, c_out) for input x at noise σ (B,); `period`: x is a loop of that
        many frames tiled, so the tempo clock is the loop's (its beats fitted to the period), tiled."""
        c_skip, c_out, c_in = (s.to(x.dtype)[:, None, None] for s in self.precond.get_scalings(sigma))
        vector = tokens = None
        inputs = x * c_in
        if self.conditioner is not None:
            if cond is None:
                cond = unconditional(x.shape[0], x.device)
            vector, tokens = self.conditioner(cond, drop)
            if not self.recipe.model.cross_attention:
                tokens = None
            if self.clock:
                known = cond.bpm > 0
                if drop is not None:
                    known = known & ~drop[:, self.conditioner.names.index("tempo")]
                clock = tempo_clock(
                    period or x.shape[-1],
                    cond.bpm,
                    self.sample_rate / self.hop_length,
                    self.recipe.conditioning.beats_per_bar,
                    circular or period is not None,
                    cond.start,
                )
                if period is not None:
                    clock = clock[..., torch.arange(x.shape[-1], device=x.device) % period]
                clock = (clock * known[:, None, None]).to(x.dtype)
                inputs = torch.cat([inputs, clock], dim=1)
        out = self.unet(inputs, self._noise_input(sigma), cond=vector, tokens=tokens, circular=circular)
        return out, c_skip, c_out

    def loop_frames(self, frames: int) -> int:
        """The length a `frames`-long loop period runs through the U-Net at: the nearest multiple of its
        factor (the lengths it halves exactly on a loop at every level)."""
        return max(1, round(frames / self.factor)) * self.factor

    def denoise(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: Conditions | None = None,
        drop: Tensor | None = None,
        circular: bool = False,
        tile: bool = True,
    ) -> Tensor:
        """D(x; σ): the denoised estimate, what k-diffusion samplers call. σ is (B,) or a scalar.

        `circular`: x is one period of a loop, of any length, and the estimate is a function on the
        loop: seamless by construction. Two ways (`tile`; SamplingConfig.loops):

        - tile (default): the period repeated to a window at least as long as the training windows
          and two periods, run as the network was trained (zero-padded ends, the loop's tempo clock
          tiled), and the outputs of each frame's copies averaged with a Hann window over the whole
          (a partition of unity at two copies), so every frame's estimate comes mostly from a copy
          far from the ends. Training windows hold a loop repeated, so this is their distribution.
        - wrap: every conv wraps around the one period (the U-Net's circular mode; a period that
          is not a multiple of its factor is resampled to loop_frames and back). One period's
          cost, but the network never met a window without ends in training, and its ends reach
          every frame through the group norms: on the 44.1 kHz demo's denoiser the loops it
          samples come out 1.7× wider than the data, where tiling gives 1.15× (BENCHMARKS.md,
          "Loop denoising").
        """
        sigma = sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma
        if circular and tile:
            return self._tiled(x, sigma, cond, drop)
        period = x.shape[-1]
        frames = self.loop_frames(period) if circular else period
        inputs = x
        if frames != period:
            inputs = resize_loop(x.float(), frames).to(x.dtype)
            if cond is not None:  # unknown values (0) stay unknown
                cond = replace(cond, bpm=cond.bpm * (period / frames), seconds=cond.seconds * (frames / period))
        out, c_skip, c_out = self._network(inputs, sigma, cond, drop, circular)
        if frames != period:
            out = resize_loop(out.float(), period).to(out.dtype)
        return out * c_out + x * c_skip

    def tile_frames(self, period: int) -> int:
        """The window a loop of `period` frames is tiled to: at least the training window and two
        periods (every frame then has a copy in the window's middle half), a multiple of the factor."""
        return math.ceil(max(self.recipe.data.sample_size, 2 * period) / self.factor) * self.factor

    def network_frames(self, frames: int, circular: bool, tile: bool = True) -> int:
        """The frames one U-Net call runs for `frames` frames in denoise's mode: what its cost scales with."""
        if not circular:
            return frames
        return self.tile_frames(frames) if tile else self.loop_frames(frames)

    def _tiled(self, x: Tensor, sigma: Tensor, cond: Conditions | None, drop: Tensor | None) -> Tensor:
        """denoise's tile mode (see there)."""
        period, length = x.shape[-1], self.tile_frames(x.shape[-1])
        where = torch.arange(length, device=x.device) % period
        out, c_skip, c_out = self._network(x[..., where], sigma, cond, drop, False, period)
        weight = torch.sin(math.pi * (torch.arange(length, device=x.device, dtype=torch.float32) + 0.5) / length) ** 2
        folded = torch.zeros(*x.shape, device=x.device, dtype=torch.float32).index_add_(-1, where, out.float() * weight)
        total = torch.zeros(period, device=x.device, dtype=torch.float32).index_add_(0, where, weight)
        return (folded / total).to(out.dtype) * c_out + x * c_skip

    def sample_sigmas(self, n: int, device: torch.device | str) -> Tensor:
        """Training noise levels, drawn as the recipe says (global RNG, seeded per rank by the engine)."""
        cfg = self.recipe.diffusion
        if cfg.sigma_sampling == "log-normal":
            return (torch.randn(n, device=device) * cfg.sigma_std + cfg.sigma_mean).exp()
        if cfg.sigma_sampling == "log-uniform":
            lo, hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max)
            return (torch.rand(n, device=device) * (hi - lo) + lo).exp()
        lo, hi = (math.atan(s) * 2 / math.pi for s in (cfg.sigma_min, cfg.sigma_max))
        return torch.tan((torch.rand(n, device=device) * (hi - lo) + lo) * math.pi / 2)

    def forward(
        self,
        data: Tensor,
        cond: Conditions | None = None,
        frames: Tensor | None = None,
        target: Tensor | None = None,
        sigma: Tensor | None = None,
        circular: bool = False,
    ) -> Tensor:
        """Per-example training loss.

        Diffusion (no `target`): `data` is shard data (B, C, T) (latents or audio, not yet
        normalized), noised here at random σ; conditions are dropped at random (classifier-free
        guidance). Distillation (`target` and `sigma` (B,)): `data` is model-space input already
        at noise σ, and the loss is the distance of D(data; σ) (`cond` as given, `circular` as
        denoise takes it) to the denoised estimate `target`, in the network's output units and
        weighted as the diffusion loss is, so both losses mean the same at every σ.
        `frames` (B,) counts the real steps of each window; the zero padding after them is not scored.
        """
        if target is not None:
            if sigma is None:
                raise ValueError("a distillation loss needs the input's sigma")
            c_out = self.precond.get_scalings(sigma)[1][:, None, None]
            tile = self.recipe.sampling.loops == "tile"  # a loop as the student will sample it
            error = ((self.denoise(data, sigma, cond, None, circular, tile).float() - target.float()) / c_out).pow(2)
        else:
            x0 = self.to_model(data)
            if frames is not None:  # the padding after each window stays zero in the model's space
                x0 = x0 * (torch.arange(x0.shape[-1], device=x0.device) < frames[:, None])[:, None, :]
            sigma = self.sample_sigmas(x0.shape[0], x0.device)
            noised = x0 + torch.randn_like(x0) * sigma[:, None, None]
            drop = None
            if self.conditioner is not None and cond is not None:
                drop = self.conditioner.random_drop(x0.shape[0], x0.device)
            out, c_skip, c_out = self._network(noised, sigma, cond, drop, circular=False)
            error = (out.float() - ((x0 - c_skip * noised) / c_out).float()).pow(2)
        error = error.mean(dim=1)  # (B, T)
        if frames is not None:
            mask = torch.arange(error.shape[-1], device=error.device)[None, :] < frames[:, None]
            per_example = (error * mask).sum(-1) / mask.sum(-1).clamp_min(1)
        else:
            per_example = error.mean(-1)
        weight = torch.ones_like(sigma) if self.v_objective else self.precond.weighting(sigma)
        return per_example * weight


def tempo_clock(
    frames: int, bpm: Tensor, frame_rate: float, beats_per_bar: int, circular: bool, start: Tensor | None = None
) -> Tensor:
    """(B, 4, frames): sin/cos of the beat phase and of the bar phase at `bpm`; phase 0 is `start`
    (B,) seconds before frame 0 (None: at frame 0).

    Why: placing hits a beat apart over hundreds of frames is hard for convolutions and
    position-free attention to learn from a tempo vector alone; a clock ticking at the beat
    makes "a hit at this phase" a local decision. Loops begin on a downbeat (packs cut them at
    bar lines, and the sharder splits long files at bar lines), so a training window that starts
    `start` seconds into its loop gets the clock of that position: phase 0 is always the
    downbeat, the model learns "the kick falls at phase 0", and a generated loop (clock from 0)
    starts on its downbeat. On a loop (`circular`) the beat is stretched so a whole number of
    beats, and of bars (at least one), fits the period exactly: the clock wraps too. A
    generated loop is a whole number of bars, so there both stretches are the same few cents.
    """
    beat = 60.0 / bpm.double().clamp_min(1.0) * frame_rate  # frames per beat
    bar = beat * beats_per_bar
    if circular:
        beat = frames / (frames / beat).round().clamp_min(1)
        bar = frames / (frames / bar).round().clamp_min(1)
    t = torch.arange(frames, device=bpm.device, dtype=torch.float64)[None, :]
    if start is not None:
        t = t + start.double()[:, None] * frame_rate
    beats, bars = 2 * math.pi * t / beat[:, None], 2 * math.pi * t / bar[:, None]
    return torch.stack([beats.sin(), beats.cos(), bars.sin(), bars.cos()], dim=1).float()


def unconditional(batch_size: int, device: torch.device | str) -> Conditions:
    """Conditions with every value unknown: the conditioner answers with its null vectors."""
    unknown = torch.zeros(batch_size, device=device)
    return Conditions(torch.full((batch_size,), -1, device=device, dtype=torch.long), unknown, unknown, unknown)
