"""stable-audio-tools autoencoders in and out, checked against the real stable-audio-tools
(installed from PyPI by reference_packages): the same numbers from the same weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference_packages import stable_audio_tools_fixture, torchcodec_fixture  # noqa: F401 (fixtures)
from safetensors.torch import save_file

from wavediff.cli import main
from wavediff.config import AERecipe, AutoencoderConfig, to_dict
from wavediff.errors import CheckpointError, ConfigError
from wavediff.interop.stable_audio import export_autoencoder, import_autoencoder
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import read_config, save_checkpoint
from wavediff.models.factory import load_autoencoder


@pytest.fixture
def sat(stable_audio_tools):
    """stable-audio-tools' model factory and checkpoint reader."""
    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.models.utils import load_ckpt_state_dict

    return create_model_from_config, load_ckpt_state_dict


def oobleck(
    *, channels=1, base=4, mults=(1, 2), strides=(2, 4), latent=4, sr=8000, vae=True, final_tanh: bool | None = False
) -> dict:
    """A stable-audio-tools autoencoder model_config.json (tiny by default)."""
    common = {"channels": base, "c_mults": list(mults), "strides": list(strides), "use_snake": True}
    decoder = {"out_channels": channels, **common, "latent_dim": latent}
    if final_tanh is not None:  # absent: their default, a tanh
        decoder["final_tanh"] = final_tanh
    model = {
        "encoder": {"type": "oobleck", "config": {"in_channels": channels, **common, "latent_dim": latent * (1 + vae)}},
        "decoder": {"type": "oobleck", "config": decoder},
        "latent_dim": latent,
        "downsampling_ratio": int(torch.tensor(strides).prod()),
        "io_channels": channels,
    }
    if vae:
        model["bottleneck"] = {"type": "vae"}
    return {"model_type": "autoencoder", "sample_rate": sr, "model": model}


# Stable Audio Open 1.0's autoencoder, as its model_config.json gives it (the pretransform).
SAO = oobleck(channels=2, base=128, mults=(1, 2, 4, 8, 16), strides=(2, 4, 4, 8, 8), latent=64, sr=44100)


def whole_model(ae_config: dict) -> dict:
    """A diffusion model's config whose pretransform is the autoencoder (as Stable Audio Open ships)."""
    pretransform = {"type": "autoencoder", "iterate_batch": True, "config": ae_config["model"]}
    return {
        "model_type": "diffusion_cond",
        "sample_rate": ae_config["sample_rate"],
        "model": {"pretransform": pretransform, "io_channels": ae_config["model"]["latent_dim"]},
    }


def reference(sat, config: dict, seed: int = 0) -> torch.nn.Module:
    """Their model with random weights, SnakeBeta α/β and weight-norm magnitudes moved off their
    initial values so a swapped or dropped tensor shows."""
    torch.manual_seed(seed)
    model = sat[0](copy.deepcopy(config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.normal_(0.0, 0.3)
            elif name.endswith("weight_g"):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    return model


def parametrized(state: dict) -> dict:
    """The same weights as a model built with torch's parametrizations.weight_norm saves them."""
    renames = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
    out = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        out[f"{head}.{renames[leaf]}" if leaf in renames else key] = value
    return out


def agreement(ref: torch.nn.Module, ours: Autoencoder, x: torch.Tensor) -> tuple[float, float]:
    """Max abs differences of the posterior mean and of the decoded audio (their decode of their mean
    against ours of the same latents). Their encoder gets the clip padded as their preprocessing pads it."""
    with torch.no_grad():
        padded = F.pad(x, (0, -x.shape[-1] % ref.downsampling_ratio))
        _, info = ref.encode(padded, return_info=True)
        pre = info["pre_bottleneck_latents"]
        mean_ref = pre.chunk(2, dim=1)[0] if ours.cfg.bottleneck == "vae" else pre
        mean = ours.encode(x)
        decoded_ref, decoded = ref.decode(mean_ref), ours.decode(mean_ref)
    assert mean.shape == mean_ref.shape and decoded.shape == decoded_ref.shape
    assert mean_ref.abs().max() > 1e-3 and decoded_ref.abs().max() > 1e-3  # not vacuous
    return (mean - mean_ref).abs().max().item(), (decoded - decoded_ref).abs().max().item()


def write_source(folder: Path, config: dict, state: dict, weights: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_config.json").write_text(json.dumps(config))
    if weights.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / weights))
    else:
        torch.save({"state_dict": state, "global_step": 7}, folder / weights)
    return folder


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize("weights", ["model.safetensors", "model.ckpt"])
@pytest.mark.parametrize("layout", ["bare", "autoencoder.", "pretransform.model."])
@pytest.mark.parametrize("style", ["weight_g", "parametrizations"])
def test_import_gives_their_numbers_from_every_checkpoint_form(sat, tmp_path, weights, layout, style):
    config = oobleck()
    ref = reference(sat, config)
    state = ref.state_dict() if style == "weight_g" else parametrized(ref.state_dict())
    if layout == "autoencoder.":  # their training checkpoint: the autoencoder beside its discriminator
        state = {**{f"autoencoder.{k}": v for k, v in state.items()}, "discriminator.conv.weight": torch.ones(3)}
    if layout == "pretransform.model.":  # a whole diffusion model with the autoencoder as its pretransform
        state = {**{f"pretransform.model.{k}": v for k, v in state.items()}, "model.model.proj.weight": torch.ones(3)}
        config = whole_model(config)
    src = write_source(tmp_path / "src", config, state, weights)
    folder = import_autoencoder(src, tmp_path / "run")
    ours, recipe, _ = load_autoencoder(tmp_path / "run", "cpu")
    assert recipe.sample_rate == 8000 and recipe.model.strides == [2, 4] and recipe.model.padding == "zeros"
    assert "stable-audio-tools" in read_config(folder).imported_from
    encoded, decoded = agreement(ref, ours, torch.randn(2, 1, 1000) * 0.5)
    assert encoded <= 1e-5 and decoded <= 1e-5


@pytest.mark.parametrize("final_tanh", [None, True])
def test_their_tanh_on_the_output_is_kept(sat, tmp_path, final_tanh):
    """Their decoder's default ends in a tanh (Stable Audio Open's turns it off): an import keeps it."""
    config = oobleck(final_tanh=final_tanh, vae=False)
    ref = reference(sat, config)
    import_autoencoder(write_source(tmp_path / "src", config, ref.state_dict(), "model.safetensors"), tmp_path / "run")
    ours, recipe, _ = load_autoencoder(tmp_path / "run", "cpu")
    assert recipe.model.output_tanh and recipe.model.bottleneck == "plain"
    encoded, decoded = agreement(ref, ours, torch.randn(1, 1, 512))
    assert encoded <= 1e-5 and decoded <= 1e-5


def test_files_can_be_named_explicitly(sat, tmp_path):
    config = oobleck()
    ref = reference(sat, config)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "sao.json").write_text(json.dumps(config))
    write_source(tmp_path / "w", {}, ref.state_dict(), "vae-step-100.ckpt")
    weights, config_file = tmp_path / "w" / "vae-step-100.ckpt", tmp_path / "cfg" / "sao.json"
    assert main(["import-ae", str(weights), str(tmp_path / "run"), "-q", "--config", str(config_file)]) == 0
    ours, _, _ = load_autoencoder(tmp_path / "run", "cpu")
    assert max(agreement(ref, ours, torch.randn(1, 1, 256))) <= 1e-5


def test_a_pickled_checkpoint_never_runs_code(sat, tmp_path):
    """`.ckpt` files load with weights_only=True: one that would run code on load is refused, unrun."""
    ref = reference(sat, oobleck())
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    src = write_source(tmp_path / "src", oobleck(), {}, "model.safetensors")
    (src / "model.safetensors").unlink()
    torch.save({"state_dict": ref.state_dict(), "callback": Payload()}, src / "model.ckpt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        import_autoencoder(src, tmp_path / "run")
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_what_cannot_be_imported_is_named(sat, tmp_path, capsys):
    ref = reference(sat, oobleck())
    elu = oobleck()
    elu["model"]["decoder"]["config"]["use_snake"] = False
    src = write_source(tmp_path / "elu", elu, ref.state_dict(), "model.safetensors")
    with pytest.raises(ConfigError, match=r"model_config.json: model.decoder.config.use_snake is false"):
        import_autoencoder(src, tmp_path / "run")
    wrong = oobleck(latent=8)  # the config says 8 latent channels, the weights hold 4
    src = write_source(tmp_path / "wrong", wrong, ref.state_dict(), "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors \(renamed.*shape mismatch: decoder\.0\."):
        import_autoencoder(src, tmp_path / "run")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "model_config.json").write_text(json.dumps(oobleck()))
    assert main(["import-ae", str(empty), str(tmp_path / "run")]) == 2
    assert "expected model.safetensors or model.ckpt" in capsys.readouterr().err
    good = write_source(tmp_path / "good", oobleck(), ref.state_dict(), "model.safetensors")
    import_autoencoder(good, tmp_path / "run")
    with pytest.raises(CheckpointError, match="already holds a run"):
        import_autoencoder(good, tmp_path / "run")


def test_an_imported_autoencoder_runs_through_the_pipeline(sat, latent_pack, tmp_path):
    """import-ae, then encode, eval-ae, reconstruct and a latent denoiser trained on it, all by command."""
    from tiny_recipes import TINY_DENOISER

    ref = reference(sat, oobleck())
    state = {f"pretransform.model.{k}": v for k, v in ref.state_dict().items()}
    src = write_source(tmp_path / "src", whole_model(oobleck()), state, "model.ckpt")
    ae, latents, run = tmp_path / "ae", tmp_path / "latents", tmp_path / "loops"
    assert main(["import-ae", str(src), str(ae), "-q"]) == 0
    assert main(["encode", str(ae), str(latent_pack["audio"]), str(latents), "-q"]) == 0
    report = tmp_path / "r.json"
    assert main(["eval-ae", str(ae), str(latent_pack["audio"]), "--split", "val", "--out", str(report)]) == 0
    assert json.loads(report.read_text())  # the report's numbers, whatever random weights give
    clip = next((latent_pack["root"] / "pack").rglob("*.wav"))
    assert main(["reconstruct", str(ae), str(clip), str(tmp_path / "recon.wav")]) == 0
    sets = [f'data.path="{latents}"', f'autoencoder="{ae}"', *TINY_DENOISER, "train.steps=3", "train.sample_every=0"]
    assert main(["train", "loops-tiny-cpu", "--out", str(run), "-q", *(a for s in sets for a in ("--set", s))]) == 0
    assert read_config(run).autoencoder.recipe == read_config(ae).recipe


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("bottleneck", ["vae", "plain"])
def test_export_loads_in_stable_audio_tools_with_the_same_numbers(sat, tmp_path, bottleneck):
    torch.manual_seed(1)
    cfg = AutoencoderConfig(channels=2, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=3)
    cfg.bottleneck = bottleneck
    ours = Autoencoder(cfg).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "log_" in name:
                p.normal_(0.0, 0.3)
    recipe = to_dict(AERecipe(sample_rate=16000, model=cfg))
    save_checkpoint(tmp_path / "run", 5, ours.state_dict(), {"kind": "autoencoder", "recipe": recipe})
    assert main(["export-ae", str(tmp_path / "run"), str(tmp_path / "sat"), "-q"]) == 0
    create, load_state = sat
    config = json.loads((tmp_path / "sat" / "model_config.json").read_text())
    theirs = create(config).eval()
    theirs.load_state_dict(load_state(str(tmp_path / "sat" / "model.safetensors")))  # strict: every key fits
    assert config["sample_rate"] == 16000
    encoded, decoded = agreement(theirs, ours, torch.randn(1, 2, 640))
    assert encoded <= 1e-5 and decoded <= 1e-5


def test_a_circular_autoencoder_is_not_exported(tmp_path):
    cfg = AutoencoderConfig(channels=1, base_channels=2, channel_mults=[1], strides=[2], latent_dim=2)
    cfg.padding = "circular"
    recipe = to_dict(AERecipe(model=cfg))
    save_checkpoint(tmp_path / "run", 1, Autoencoder(cfg).state_dict(), {"kind": "autoencoder", "recipe": recipe})
    with pytest.raises(ConfigError, match="padding is 'circular'"):
        export_autoencoder(tmp_path / "run", tmp_path / "out")


# --------------------------------------------------------------------------- their data loader


@pytest.mark.parametrize("workers", [0, 1])
def test_their_webdataset_loader_reads_our_shards(sat, torchcodec, tmp_path, workers):
    """stable-audio-tools' own WebDataset loader on `wavediff data shard` output: the same audio
    (a window from the start of each loop) and our metadata in its JSON."""
    from stable_audio_tools.data.dataset import LocalWebDatasetConfig, WebDatasetDataLoader

    from data_tools.shard import ShardOptions, shard
    from data_tools.synth import synthesize_pack
    from wavediff.shards.format import read_manifest, shard_paths
    from wavediff.shards.reader import audio_samples

    synthesize_pack(tmp_path / "pack", genres=["techno"], loops_per_genre=3, sample_rate=16000, bars=1, seed=0)
    options = ShardOptions(sample_rate=16000, channels=2, workers=1, val_fraction=0.0)
    shard([tmp_path / "pack"], tmp_path / "shards", options, progress=False)
    paths = shard_paths(tmp_path / "shards", read_manifest(tmp_path / "shards"), "train")
    ours = {meta["sha1"]: (meta, wav) for path in paths for _, meta, wav in audio_samples(path, 16000)}
    loader = WebDatasetDataLoader(
        [LocalWebDatasetConfig("wavediff", str(tmp_path / "shards"))],
        batch_size=2,
        sample_size=16384,
        sample_rate=16000,
        num_workers=workers,
        epoch_steps=2,
        random_crop=False,
        augment_phase=False,
        remove_silence=False,
    )
    audio, info = next(iter(loader.data_loader))
    # their WebLoader collates each batch again, as a batch of one (their training step unwraps it)
    audio = audio[0]
    info = [{k: meta[k][0] for k in ("sha1", "genre", "bpm", "seconds_start")} for meta in info]
    assert audio.shape == (2, 2, 16384) and len(info) == 2
    for clip, meta in zip(audio, info):
        mine, wav = ours[meta["sha1"]]
        assert meta["genre"] == "techno" and meta["bpm"] == mine["bpm"] and meta["seconds_start"] == 0
        assert clip.abs().max() > 0.01
        torch.testing.assert_close(clip, wav[:, :16384], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- Stable Audio Open's size


@pytest.mark.slow
def test_stable_audio_open_autoencoder_agrees_with_stable_audio_tools(sat, tmp_path):
    """Stable Audio Open's published configuration (156M parameters), random weights, a 2-second
    stereo clip at float32: encode (posterior mean) and decode within 1e-4; and exported back, their
    code loads exactly the tensors it started from."""
    ref = reference(sat, SAO)
    state = {f"pretransform.model.{k}": v for k, v in ref.state_dict().items()}
    src = write_source(tmp_path / "sao", whole_model(SAO), state, "model.safetensors")
    import_autoencoder(src, tmp_path / "run")
    ours, recipe, _ = load_autoencoder(tmp_path / "run", "cpu")
    assert recipe.model == AutoencoderConfig()  # wavediff's defaults are this network
    encoded, decoded = agreement(ref, ours, 0.3 * torch.randn(1, 2, 2 * 44100))
    assert encoded <= 1e-4 and decoded <= 1e-4
    export_autoencoder(tmp_path / "run", tmp_path / "back")
    back = sat[1](str(tmp_path / "back" / "model.safetensors"))
    assert back.keys() == ref.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())
