"""Typed configs: dataclasses filled from TOML recipes and `--set key=value` overrides.

A recipe is strict: an unknown key or a value of the wrong type is an error that names
the key, so a typo never silently trains the wrong model. Configs are plain data (no
torch here), so every layer may import them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomllib

from wavediff.errors import ConfigError

T = TypeVar("T")


# --------------------------------------------------------------------------- data

# What part of a track a file is: the sharder gives every sample one (data_tools.metadata),
# and a denoiser with `conditioning.role` learns one embedding per entry.
ROLES = ("drums", "bass", "melodic", "fx", "vocal")


@dataclass
class AugmentConfig:
    """Loop-preserving augmentations applied by the loader to training batches (never to
    evaluation). Roll applies to loops, audio or latent; the others to audio only. Each keeps
    the sample's labels true (transpose moves them with the audio)."""

    roll: bool = True  # random circular shift: a rolled loop is still the same loop
    gain_db: float = 0.0  # random gain in ±gain_db dB (0 turns it off)
    polarity: bool = False  # random sign flip
    channel_swap: bool = False  # random left/right swap
    # Random transposition by a whole number of semitones in ±transpose (0 turns it off): the audio is
    # resampled, so its tempo moves with its pitch and both labels (key, bpm) move with it. Audio shards only.
    transpose: int = 0


@dataclass
class DataConfig:
    """Where the shards are and how batches are cut from them."""

    path: str = ""  # a shard folder written by `wavediff data shard` (holds manifest.json)
    # Shard URLs overriding the manifest's lists: a brace pattern, a `::`-joined list or
    # `pipe:` URLs; relative paths are taken inside `path`.
    train: str = ""
    val: str = ""
    sample_size: int = 65536  # samples per training example (audio) or frames (latents)
    batch_size: int = 8  # per process
    num_workers: int = 2  # DataLoader worker processes per rank (0 loads in the main process)
    shuffle_buffer: int = 1000  # samples held for shuffling, per worker (training only)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    one_shots: bool = False  # also train on samples whose kind is "one-shot" (loops only by default)


# --------------------------------------------------------------------------- models


@dataclass
class AutoencoderConfig:
    """An Oobleck/DAC-style convolutional autoencoder; hop = product of strides.

    The defaults are Stable Audio Open's VAE (44.1 kHz stereo, 2048×, 64 latents, ~156M parameters).
    """

    channels: int = 2  # audio channels in and out
    base_channels: int = 128  # width of the first (full-rate) level
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])  # width after each stride, × base
    strides: list[int] = field(default_factory=lambda: [2, 4, 4, 8, 8])  # one per level; [2,4,4,4,4] … for 1024×
    latent_dim: int = 64  # latent channels
    bottleneck: Literal["vae", "plain"] = "vae"  # "plain": no KL term, the encoder output is the latent
    padding: Literal["zeros", "circular"] = "zeros"  # "circular": every conv wraps, so loops have no seam
    # tanh on the decoder's output: stable-audio-tools' `final_tanh` (or `soft_clip`), for imported models
    output_tanh: bool = False


@dataclass
class AELossConfig:
    """Weights and resolutions of the autoencoder objective (stable-audio-tools defaults)."""

    stft_weight: float = 1.0
    fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128, 64, 32])  # hop = size/4
    mid_side: bool = True  # also compare sum/difference signals for stereo
    perceptual_weighting: bool = True  # A-weight both signals before the STFT distance
    mel_weight: float = 1.0
    mel_fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512])
    mel_bins: int = 64  # too many for the smallest mel FFT size leaves empty filters: refused (NaN loss)
    # L1 between the waveforms (EnCodec's time-domain term). Magnitude spectra cannot see a delay
    # of a fraction of a hop or an inverted polarity, so without it a run may learn either.
    waveform_weight: float = 0.0
    kl_weight: float = 1e-4
    adversarial_weight: float = 0.1
    feature_weight: float = 5.0
    adversarial_start: int = 0  # step at which the discriminator and its losses switch on
    disc_channels: int = 32
    disc_fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])


@dataclass
class UNetConfig:
    """The 1D U-Net denoiser (wavediff.models.unet): Dance Diffusion's shape, modernized.

    Each level halves the length (levels after the first); the noise level and the
    conditioning vector modulate every residual block (adaptive group norm); self-attention
    runs at the coarse levels named in `attention_levels`.
    """

    base_channels: int = 128
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4, 4])  # width of each level, × base
    blocks_per_level: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_levels: list[int] = field(default_factory=lambda: [2, 3])  # 0-based levels with self-attention
    head_channels: int = 64  # channels per attention head
    kernel_size: int = 3  # of every residual conv (waveform models want 5 or more)
    dropout: float = 0.0
    cross_attention: bool = False  # also attend to the conditioning tokens (text-ready), not only their sum
    # "circular": generation treats the sequence as a loop (every conv wraps), so a generated
    # loop has no seam. Training always pads with zeros: a training window is not one period.
    padding: Literal["zeros", "circular"] = "circular"
    # "dance-diffusion": Harmonai's waveform U-Net instead (wavediff.models.dance; `wavediff import-dd`),
    # fixed k-size-5 conv blocks and Fourier noise channels, no conditioning; blocks_per_level is ignored.
    architecture: Literal["wavediff", "dance-diffusion"] = "wavediff"


@dataclass
class ConditioningConfig:
    """What the denoiser is told about the loop it makes (wavediff.models.conditioning).

    Each condition has a learned null embedding, used for unknown values (no genre, no
    tempo) and, during training, at random (classifier-free guidance).
    """

    genre: bool = True  # an embedding from the dataset's genre vocabulary
    tempo: bool = True  # Fourier features of log-BPM
    tempo_clock: bool = True  # and the beat and bar phase as extra input channels (see wavediff.models.diffusion)
    length: bool = True  # Fourier features of the loop's seconds, and its bar count
    dim: int = 256  # width of each condition's vector (and token, for cross-attention)
    dropout: float = 0.1  # each condition is nulled with this probability per example
    dropout_all: float = 0.1  # every condition is nulled together (the unconditional model CFG needs)
    beats_per_bar: int = 4
    genres: list[str] = field(default_factory=list)  # the vocabulary: filled from the shards when empty
    role: bool = False  # an embedding of the sample's role (drums, bass, …); off in configs that predate it
    roles: list[str] = field(default_factory=lambda: list(ROLES))  # the role vocabulary
    key: bool = False  # an embedding of the key (24 classes: tonic × major/minor); off in configs that predate it
    # A text prompt (wavediff.models.text): its sentence-encoder token embeddings feed cross-attention
    # (model.cross_attention must be on) and their mean the pooled vector. Training prompts are composed
    # from each sample's labels (wavediff.io.prompts). Off in configs that predate it.
    text: bool = False


@dataclass
class DiffusionConfig:
    """The diffusion objective. The model works on data divided by `sigma_data`, so noise
    levels here are in units of the data's standard deviation."""

    objective: Literal["karras", "v"] = "karras"  # Karras preconditioning, or a v-diffusion model
    sigma_data: float = 0.0  # 0: the latent shards' measured std (RMS of a few clips for waveforms)
    # How data reaches the model. "global": divided by sigma_data. "channel" (latent models): each
    # channel less its mean, over its own std, from the latent shards' statistics; for latents whose
    # channels differ in scale or carry an offset (ae-44k-cpu's: std 0.7–3.05, three channels at mean
    # 1.1–1.2), which one sigma_data leaves wide or off-centre in the model's space. sigma_data is then 1.
    normalize: Literal["global", "channel"] = "global"
    channel_mean: list[float] = field(default_factory=list)  # "channel": per latent channel; [] = from the shards
    channel_std: list[float] = field(default_factory=list)
    sigma_sampling: Literal["log-normal", "log-uniform", "v-diffusion"] = "log-normal"
    sigma_mean: float = -0.5  # log-normal: mean of ln σ
    sigma_std: float = 1.2  # log-normal: std of ln σ
    sigma_min: float = 0.01  # log-uniform / v-diffusion range, and the sampling schedule's ends
    sigma_max: float = 80.0
    weighting: Literal["karras", "soft-min-snr", "snr"] = "karras"  # k-diffusion's loss weightings


@dataclass
class SamplingConfig:
    """How loops are sampled: the defaults of `wavediff generate` and of training examples."""

    steps: int = 50
    sampler: str = "dpmpp-2m"  # a name from wavediff.generation.samplers.SAMPLERS
    schedule: Literal["karras", "exponential", "polyexponential"] = "karras"
    rho: float = 7.0  # karras / polyexponential schedule shape
    cfg_scale: float = 3.0  # classifier-free guidance (1 turns it off); with a prompt, of the structured controls
    prompt_cfg_scale: float = 3.0  # guidance of the prompt, on top of the structured controls' (text models)
    example_bars: int = 2  # training examples: one loop per genre of this many bars
    # A distilled student's (`wavediff distill`): the step count it learnt to sample in, with the
    # settings above; other steps or guidance still run, with a warning. 0: any steps (a teacher).
    distilled_steps: int = 0
    # How a loop is denoised (LoopDiffusion.denoise): "tile", its period repeated to a training-length
    # window, as the network was trained; "wrap", one period with every conv wrapping (about half the
    # U-Net cost for a 4-bar loop, but out of the training distribution: wider, noisier loops).
    loops: Literal["tile", "wrap"] = "tile"


# --------------------------------------------------------------------------- training


@dataclass
class OptimizerConfig:
    """One optimizer and its learning-rate schedule.

    The schedule is a function of the optimizer step (not of micro-batches), so gradient
    accumulation never stretches it and a resumed run needs only the step to continue it.
    """

    name: Literal["adamw", "adam"] = "adamw"
    lr: float = 1.5e-4  # peak learning rate, reached at the end of the warm-up
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 1e-3  # decoupled (AdamW); L2 for "adam"
    warmup_steps: int = 0  # linear ramp from lr/warmup_steps to lr
    schedule: Literal["constant", "cosine", "inverse_sqrt"] = (
        "constant"  # after the warm-up; cosine ends at 0 at train.steps
    )


@dataclass
class TrainConfig:
    """The shared engine's knobs. A step is one optimizer update: grad_accum micro-batches.

    With a discriminator the objective picks which optimizer a step updates (the autoencoder
    alternates generator and discriminator, as stable-audio-tools does); a step whose loss is
    not finite updates nothing but still counts as a step.
    """

    steps: int = 100_000  # the run ends at this step (also the end of a cosine schedule)
    seed: int = 0  # weights, noise and data order all follow from it
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    cpu: bool = False  # force CPU even when a GPU is visible
    grad_accum: int = 1  # micro-batches per step; effective batch = batch × grad_accum × processes
    # Every optimizer's lr is the lr for one process, multiplied by the process count
    # ("linear", Goyal et al.), by its square root ("sqrt", for Adam-like optimizers), or left ("none").
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    grad_clip: float = 1.0  # max global gradient norm per optimizer (0 turns clipping off)
    ema_power: float = 2 / 3  # k-diffusion EMAWarmup: decay = 1 − (1 + updates)^−power, capped at ema_max
    ema_max: float = 0.9999
    checkpoint_every: int = 1000  # also where the data stream is reseeded, so resumes replay it exactly
    keep_last: int = 3  # older checkpoints are deleted
    log_every: int = 10  # TensorBoard scalars, averaged over the steps in between
    sample_every: int = 1000  # audio examples and their spectrograms to TensorBoard (0 turns them off)
    max_bad_steps: int = 20  # consecutive non-finite losses that stop the run
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # the model's (the generator's)
    disc_optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=3e-4)
    )  # the discriminator's, for objectives that have one


@dataclass
class AERecipe:
    """Everything `wavediff train-ae` needs; also what an autoencoder checkpoint carries."""

    kind: Literal["autoencoder"] = "autoencoder"
    sample_rate: int = 44100
    data: DataConfig = field(default_factory=DataConfig)
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    loss: AELossConfig = field(default_factory=AELossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DiffusionRecipe:
    """Everything `wavediff train` needs; also what a denoiser checkpoint carries (resolved:
    sigma_data and the genre vocabulary filled in, the autoencoder embedded)."""

    kind: Literal["diffusion"] = "diffusion"
    autoencoder: str = ""  # the autoencoder checkpoint the latent shards came from; "" = a waveform model
    sample_rate: int = 44100
    channels: int = 0  # of the diffused data (latent channels, or audio channels); 0: from the shards
    data: DataConfig = field(default_factory=DataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def data_kind(self) -> Literal["audio", "latent"]:
        """The shards it trains on: latents of its autoencoder, or audio for a waveform model."""
        return "latent" if self.autoencoder else "audio"


@dataclass
class ClassifierConfig:
    """The genre classifier of the evaluation suite (wavediff.models.classifier): a small
    1D conv net over log-mel frames, pooled over time, so it takes clips of any length."""

    width: int = 64  # channels of every conv
    layers: int = 3  # strided conv blocks after the first conv (each halves the frames)
    kernel_size: int = 5
    dropout: float = 0.1  # before the last layer


def _classifier_data() -> DataConfig:
    return DataConfig(
        sample_size=32768,
        batch_size=16,
        num_workers=1,
        shuffle_buffer=256,
        augment=AugmentConfig(roll=True, gain_db=6.0, polarity=True),
    )


def _classifier_train() -> TrainConfig:
    return TrainConfig(
        steps=400,
        checkpoint_every=200,
        keep_last=1,
        log_every=10,
        sample_every=100,
        ema_max=0.99,
        optimizer=OptimizerConfig(lr=2e-3, betas=[0.9, 0.99], warmup_steps=20, schedule="cosine"),
    )


@dataclass
class ClassifierRecipe:
    """Everything `wavediff train-classifier` needs; also what a classifier checkpoint carries
    (resolved: the sample rate and the label's vocabulary in the shards it learnt)."""

    kind: Literal["classifier"] = "classifier"
    sample_rate: int = 0  # of the audio it reads; 0: the shards'
    label: Literal["genre", "role"] = "genre"  # what it tells apart (checkpoints from before roles: genre)
    # The label's vocabulary (genres, or roles in ROLES order): filled from the shards when empty.
    genres: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=_classifier_data)  # sample_size: samples per training window
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=_classifier_train)


@dataclass
class FinetuneConfig:
    """What `wavediff finetune` trains of a base denoiser, and how it watches for over-fitting."""

    method: Literal["full", "frozen", "lora"] = "full"  # frozen: only conditioning and attention layers train
    lora_rank: int = 8  # rank of the adapters on attention and residual-block convs (method "lora")
    lora_alpha: float = 8.0  # adapter scale is lora_alpha / lora_rank
    val_fraction: float = 0.15  # of the pack's loops held out (by content hash) for the validation loss
    max_seconds: float = 30.0  # longer pack files are cut into chunks of whole bars
    val_examples: int = 64  # validation (and train-side) windows scored at each check
    val_repeats: int = 4  # noise draws per window: the checks use fixed noise, so they are comparable
    overfit_tolerance: float = 0.02  # warn when val loss is this fraction above its best while train loss falls
    # Augmented copies of every train loop, encoded beside it (latents cannot be augmented after encoding):
    augment_gains_db: list[float] = field(default_factory=lambda: [-3.0, 3.0])  # one copy per gain
    augment_polarity: bool = True  # one polarity-flipped copy


@dataclass
class FinetuneRecipe:
    """Everything `wavediff finetune` adds to a base checkpoint's recipe: the model, conditioning,
    diffusion and sampling settings come from the base; data.path is the pack's encoded latents."""

    kind: Literal["finetune"] = "finetune"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


DISTILL_STEPS = (4, 8)  # the student step counts `wavediff distill` makes


@dataclass
class DistillConfig:
    """What `wavediff distill` makes of a teacher denoiser: a student that samples in `steps` Euler
    steps with no classifier-free guidance (progressive distillation: wavediff.training.distill)."""

    steps: int = 8  # the student's sampler steps: one of DISTILL_STEPS
    teacher_substeps: int = 2  # Heun steps of the guided teacher per student step (its target)
    teacher_cfg_scale: float = 0.0  # guidance the student bakes in; 0: the teacher's sampling.cfg_scale
    circular_every: int = 2  # every n-th batch is distilled as a loop (circular), as generate samples; 0: never


@dataclass
class DistillRecipe:
    """Everything `wavediff distill` adds to a teacher checkpoint's recipe: the student keeps the
    teacher's model, conditioning and diffusion settings; data.path defaults to the teacher's shards."""

    kind: Literal["distill"] = "distill"
    distill: DistillConfig = field(default_factory=DistillConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class PreviewConfig:
    """A preview decoder's size: the autoencoder's decoder (same hop, latent and audio channels,
    padding) at narrower widths, so it decodes the same latents many times faster."""

    base_channels: int = 16  # width of the full-rate level (the autoencoder's is its model.base_channels)
    channel_mults: list[int] = field(default_factory=list)  # width after each stride, × base; []: the autoencoder's


@dataclass
class PreviewLossConfig:
    """What a preview decoder is trained to match: the full decoder's output on the same latents
    (spectral and waveform terms) and, optionally, the audio itself."""

    decoder_weight: float = 1.0  # MR-STFT + mel distance to the full decoder's output
    audio_weight: float = 0.0  # MR-STFT + mel distance to the audio the latents were encoded from
    waveform_weight: float = 1.0  # L1 distance to the full decoder's output
    stft_weight: float = 1.0
    fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128, 64])
    mid_side: bool = False
    perceptual_weighting: bool = True
    mel_weight: float = 1.0
    mel_fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024])
    mel_bins: int = 64


@dataclass
class PreviewRecipe:
    """Everything `wavediff train-preview` needs besides the autoencoder; also what a preview
    decoder's checkpoint carries (sample_rate filled in from the autoencoder)."""

    kind: Literal["preview"] = "preview"
    sample_rate: int = 0  # 0: the autoencoder's
    data: DataConfig = field(default_factory=DataConfig)
    model: PreviewConfig = field(default_factory=PreviewConfig)
    loss: PreviewLossConfig = field(default_factory=PreviewLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- checkpoint configs


@dataclass
class EmbeddedAutoencoder:
    """The autoencoder a denoiser's latents came from: its weights' hash and its recipe (its
    weights sit in the denoiser's own model.safetensors, under `autoencoder.`)."""

    id: str
    recipe: AERecipe


@dataclass
class FinetuneBase:
    """The checkpoint a fine-tune (or LoRA adapter) started from: an adapter applies only to
    weights with this hash."""

    path: str
    hash: str
    genres: list[str]


@dataclass
class MergedFrom:
    """Where a merged LoRA checkpoint came from (`wavediff merge-lora`)."""

    base: str
    lora: str
    scale: float


@dataclass
class DistilledFrom:
    """The teacher a few-step student was distilled from (`wavediff distill`), and how."""

    teacher: str
    hash: str  # the teacher's weights_hash
    method: str  # "progressive"
    steps: int
    cfg_scale: float  # the teacher's guidance the student learnt to reproduce in one pass


@dataclass
class CheckpointConfig:
    """A checkpoint's config.json: the kind, the whole resolved recipe, and what else rebuilding
    or applying the model needs. The recipe's class follows its `kind`."""

    kind: Literal["autoencoder", "diffusion", "classifier", "lora", "preview"]
    recipe: AERecipe | DiffusionRecipe | ClassifierRecipe | PreviewRecipe
    step: int = 0
    autoencoder: EmbeddedAutoencoder | None = None  # a latent denoiser's, or the one a preview decoder matches
    base: FinetuneBase | None = None  # a fine-tune's or adapter's
    finetune: dict[str, Any] | None = None  # the fine-tune's settings, as trained (for people)
    lora: dict[str, Any] | None = None  # an adapter's shapes (models.lora.LoraAdapters.config)
    merged: MergedFrom | None = None
    distilled: DistilledFrom | None = None  # a few-step student's
    exported_from: str = ""  # an autoencoder exported from a denoiser checkpoint
    imported_from: str = ""  # weights converted from another tool's checkpoint (wavediff import-ae, import-dd)


# --------------------------------------------------------------------------- machinery


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every key and type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{name}' (known keys here: {known})")
        kwargs[key] = _coerce(hints[key], value, name)
    missing = [
        f"{where}{f.name}"
        for f in fields.values()
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing key '{missing[0]}'")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, f"{name}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tagged = _tagged_arm(args, value)
        if tagged is not None:  # recipes say which they are: the error names the key, not the union
            return from_dict(tagged, value, f"{name}.")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"'{name}': {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{name}' must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{name}' must be a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{name}' must be a table, got {value!r}")
        item = args[1] if len(args) == 2 else Any
        return {k: _coerce(item, v, f"{name}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{name}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{name}' must be a number, got {value!r}")
        if not math.isfinite(value):  # TOML has nan and inf; no setting means them, and JSON cannot hold them
            raise ConfigError(f"'{name}' must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{name}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"'{name}': unsupported config type {tp}")


def _tagged_arm(args: tuple[Any, ...], value: Any) -> type | None:
    """The one dataclass of a union whose `kind` default is the table's "kind", if any."""
    if not isinstance(value, Mapping) or "kind" not in value:
        return None
    arms = [
        a
        for a in args
        if dataclasses.is_dataclass(a)
        and any(f.name == "kind" and f.default == value["kind"] for f in dataclasses.fields(a))
    ]
    return arms[0] if len(arms) == 1 else None


def to_dict(obj: Any) -> dict[str, Any]:
    """The plain-data form of a config, as stored in a checkpoint's config.json."""
    return dataclasses.asdict(obj)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` → (['a','b','c'], value); the value is read as TOML, else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key in a nested dict (in place, and returned)."""
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a table")
            node = child
        node[parts[-1]] = value
    return data


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def recipe_path(name: str | Path) -> Path:
    """A recipe by path, or by name from the recipes shipped in the package ("ae-tiny-cpu")."""
    path = Path(name)
    if path.exists():
        return path
    shipped = Path(str(resources.files("wavediff.recipes"))) / f"{path.stem}.toml"
    if shipped.exists():
        return shipped
    raise ConfigError(f"{name}: recipe not found (neither a file nor a recipe in {shipped.parent})")


def load_recipe(path: str | Path, cls: type[T], overrides: list[str] | None = None) -> T:
    """Read a TOML recipe into `cls`, with `key=value` overrides applied on top."""
    path = recipe_path(path)
    data = apply_overrides(read_toml(path), overrides or [])
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
