"""Growing a denoiser's genre vocabulary, so a fine-tune can teach it a genre it has never seen.

A new genre's embedding row starts at the mean of the existing rows. The base checkpoint
carries no statistics of the data behind each genre, so "the nearest genre" would have to
be guessed from the pack alone; the mean is the centre of the space the U-Net has learned
to read, so the new genre starts as a blend of the known ones (not as a random vector the
network never saw), and the old rows, hence the old genres' loops, are untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from wavediff.errors import UserError
from wavediff.models.checkpoint import load_weights
from wavediff.models.diffusion import LoopDiffusion

GENRE_WEIGHT = "conditioner.genre.weight"


def with_genres(model: LoopDiffusion, genres: Sequence[str]) -> LoopDiffusion:
    """`model` with vocabulary `genres` (its own, then new names appended); the same model when nothing is new."""
    cond = model.recipe.conditioning
    old = list(cond.genres)
    if list(genres) == old:  # also what a fine-tune of a model without genre conditioning asks
        return model
    if not cond.genre:
        raise UserError("this model is not conditioned on genre, so it cannot learn a genre name")
    if list(genres[: len(old)]) != old:
        raise UserError(f"a grown vocabulary must start with the model's own genres {old}, got {list(genres)}")
    recipe = dataclasses.replace(model.recipe, conditioning=dataclasses.replace(cond, genres=list(genres)))
    grown = LoopDiffusion(recipe, model.autoencoder)
    state = model.state_dict()
    table = state[GENRE_WEIGHT][: len(old)] if old else state[GENRE_WEIGHT]  # a vocabulary-less model has one row
    new_rows = table.mean(dim=0, keepdim=True).expand(len(genres) - len(old), -1)
    state[GENRE_WEIGHT] = torch.cat([table, new_rows]) if old else new_rows.clone()
    load_weights(grown, state, "growing the genre vocabulary")
    return grown.to(next(model.parameters()).device).train(model.training)
