"""Settings every test shares."""

import os

import torch

# Tiny models on a 2-core machine: handing work between threads costs more than the
# maths, and subprocesses (training runs, DataLoader workers) inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def latent_pack(tmp_path_factory):
    """Real latent shards for denoiser tests: synth loops (2 genres, 8 kHz mono) → audio shards →
    a tiny untrained autoencoder checkpoint (hop 8, 4 latent channels) → `encode`.

    Returns a dict with "root", "audio" (audio shard folder), "ae" (AE run folder), "latents".
    """
    from data_tools.shard import ShardOptions, shard
    from data_tools.synth import synthesize_pack
    from wavediff.config import AERecipe, AutoencoderConfig, to_dict
    from wavediff.latents.encode import encode_shards
    from wavediff.models.autoencoder import Autoencoder
    from wavediff.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("latent-pack")
    synthesize_pack(
        root / "pack", genres=["techno", "dubstep"], loops_per_genre=4, sample_rate=8000, bars=1, seed=0, progress=False
    )
    options = ShardOptions(sample_rate=8000, channels=1, max_seconds=None, val_fraction=0.2, workers=1)
    shard([root / "pack"], root / "audio", options, progress=False)
    torch.manual_seed(0)
    cfg = AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=4)
    recipe = AERecipe(sample_rate=8000, model=cfg)
    save_checkpoint(root / "ae", 1, Autoencoder(cfg).state_dict(), {"kind": "autoencoder", "recipe": to_dict(recipe)})
    encode_shards(root / "ae", root / "audio", root / "latents", batch_size=4, progress=False)
    return {"root": root, "audio": root / "audio", "ae": root / "ae", "latents": root / "latents"}
