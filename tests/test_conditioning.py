"""The conditioner: genre, tempo and length vectors, their nulls, and training dropout."""

from __future__ import annotations

import pytest
import torch

from wavediff.config import ROLES, ConditioningConfig
from wavediff.errors import ConfigError, UserError
from wavediff.models.conditioning import Conditioner, Conditions, fourier_features

GENRES = ["house", "techno"]


def conditioner(**kw) -> Conditioner:
    torch.manual_seed(0)
    return Conditioner(ConditioningConfig(dim=16, genres=GENRES, **kw))


def conds(genre, bpm, seconds, bars) -> Conditions:
    return Conditions(
        torch.tensor(genre),
        torch.tensor(bpm, dtype=torch.float32),
        torch.tensor(seconds, dtype=torch.float32),
        torch.tensor(bars, dtype=torch.float32),
    )


def test_shapes_and_pooled_vector_is_the_token_sum():
    c = conditioner()
    vector, tokens = c(conds([0, 1], [120.0, 174.0], [2.0, 5.5], [1.0, 4.0]))
    assert vector.shape == (2, 16) and tokens.shape == (2, 3, 16)
    torch.testing.assert_close(vector, tokens.sum(1))


def test_each_condition_changes_its_own_token_only():
    c = conditioner()
    _, base = c(conds([0], [120.0], [2.0], [1.0]))
    for i, other in enumerate(
        [conds([1], [120.0], [2.0], [1.0]), conds([0], [140.0], [2.0], [1.0]), conds([0], [120.0], [4.0], [2.0])]
    ):
        _, tokens = c(other)
        for j in range(3):
            same = torch.allclose(tokens[:, j], base[:, j])
            assert same == (i != j), (i, j)


def test_unknown_values_and_drops_give_the_null_vectors():
    c = conditioner()
    _, unknown = c(conds([-1], [0.0], [0.0], [0.0]))
    torch.testing.assert_close(unknown[0], c.null)
    _, outside = c(conds([7], [0.0], [0.0], [0.0]))  # a genre id past the vocabulary is unknown too
    torch.testing.assert_close(outside[0], c.null)
    known = conds([1], [128.0], [1.875], [1.0])
    _, dropped = c(known, torch.tensor([[True, False, True]]))
    _, kept = c(known)
    torch.testing.assert_close(dropped[0, 0], c.null[0])
    torch.testing.assert_close(dropped[0, 1], kept[0, 1])
    torch.testing.assert_close(dropped[0, 2], c.null[2])


def test_nearby_tempos_get_nearby_vectors():
    c = conditioner()
    _, t = c(conds([0, 0, 0], [120.0, 121.0, 170.0], [2.0] * 3, [1.0] * 3))
    near = (t[0, 1] - t[1, 1]).norm()
    far = (t[0, 1] - t[2, 1]).norm()
    assert near < far / 3


def test_random_drop_rates():
    c = conditioner(dropout=0.2, dropout_all=0.3)
    torch.manual_seed(1)
    drop = c.random_drop(20000, "cpu")
    all_dropped = drop.all(1).float().mean().item()
    assert 0.28 < all_dropped < 0.34  # 0.3 together + 0.7 · 0.2³ by chance
    assert 0.41 < drop[:, 0].float().mean().item() < 0.47  # 0.3 + 0.7 · 0.2
    assert not conditioner(dropout=0.0, dropout_all=0.0).random_drop(100, "cpu").any()


def test_every_parameter_gets_a_gradient_even_when_nothing_is_dropped():
    c = conditioner(genre=True)
    vector, _ = c(conds([0, 1], [120.0, 130.0], [2.0, 2.0], [1.0, 1.0]))
    vector.sum().backward()
    assert all(p.grad is not None for p in c.parameters())


def test_subset_of_conditions_and_bad_settings():
    c = Conditioner(ConditioningConfig(dim=8, genre=False, length=False))
    assert c.names == ["tempo"]
    _, tokens = c(conds([-1], [120.0], [0.0], [0.0]))
    assert tokens.shape == (1, 1, 8)
    with pytest.raises(ConfigError, match="every condition is off"):
        Conditioner(ConditioningConfig(genre=False, tempo=False, length=False))
    with pytest.raises(ConfigError, match="dropout"):
        Conditioner(ConditioningConfig(dropout=1.0))


def test_genre_names():
    c = conditioner()
    assert c.genre_id("techno") == 1 and c.genre_id(None) == -1
    with pytest.raises(ValueError, match="unknown genre 'polka'.*house, techno"):
        c.genre_id("polka")


def test_fourier_features_are_bounded_and_distinct():
    f = fourier_features(torch.tensor([-1.0, 0.0, 1.0]))
    assert f.shape == (3, 16) and f.abs().max() <= 1
    assert not torch.allclose(f[0], f[2])


# --------------------------------------------------------------------------- role


def test_role_is_off_by_default_so_older_configs_build_the_same_conditioner():
    old = conditioner()
    assert ConditioningConfig().role is False
    assert old.names == ["genre", "tempo", "length"] and old.null.shape == (3, 16)
    assert not any(key.startswith("role") for key in old.state_dict())
    with_role = conditioner(role=True)
    assert with_role.names == ["genre", "tempo", "length", "role"]  # last: the others keep their places
    for key, value in old.state_dict().items():
        if key != "null":
            assert with_role.state_dict()[key].shape == value.shape
    with pytest.raises(UserError, match="without role conditioning"):
        old.role_id("bass")
    with pytest.raises(ConfigError, match="conditioning.roles must be"):
        conditioner(role=True, roles=["bass", "drums"])  # ids would disagree with the loader's


def test_role_embedding_has_a_null_and_is_dropped_like_genre():
    c = conditioner(role=True)
    assert c.role_id(None) == -1 and c.role_id("bass") == ROLES.index("bass")
    with pytest.raises(UserError, match="unknown role 'guitar'; this model knows: drums, bass"):
        c.role_id("guitar")
    base = conds([0, 0], [120.0, 120.0], [2.0, 2.0], [1.0, 1.0])
    _, unknown = c(base)  # no role given: the null
    torch.testing.assert_close(unknown[:, 3], c.null[3].expand(2, -1))
    base.role = torch.tensor([ROLES.index("bass"), ROLES.index("drums")])
    _, tokens = c(base)
    assert not torch.allclose(tokens[0, 3], tokens[1, 3])
    torch.testing.assert_close(tokens[:, :3], unknown[:, :3])  # the role moves its own token only
    _, dropped = c(base, torch.tensor([[False, False, False, True], [False] * 4]))
    torch.testing.assert_close(dropped[0, 3], c.null[3])
    torch.testing.assert_close(dropped[1, 3], tokens[1, 3])
    assert c.random_drop(5, "cpu").shape == (5, 4)
    assert conds([0], [1.0], [1.0], [1.0]).repeat(2).role is None


# --------------------------------------------------------------------------- key


def test_key_is_off_by_default_so_older_configs_build_the_same_conditioner():
    assert ConditioningConfig().key is False
    old = conditioner(role=True)
    with_key = conditioner(role=True, key=True)
    assert with_key.names == ["genre", "tempo", "length", "role", "key"]  # last: the others keep their places
    assert not any(k.startswith("key") for k in old.state_dict())
    for k, value in old.state_dict().items():
        if k != "null":
            assert with_key.state_dict()[k].shape == value.shape
    with pytest.raises(UserError, match="key 'Am': this model was trained without key conditioning"):
        old.key_id("Am")


@pytest.mark.parametrize(
    "written, stored", [("F#m", "F#m"), ("Gb minor", "F#m"), ("gbm", "F#m"), ("A", "A"), ("Bb major", "Bb")]
)
def test_key_names_are_normalised_to_one_of_24_classes(written, stored):
    from wavediff.io.keys import KEYS

    c = conditioner(key=True)
    assert KEYS[c.key_id(written)] == stored and len(KEYS) == 24


@pytest.mark.parametrize("bad", ["H", "F##", "A dorian", "", "132"])
def test_an_unknown_key_is_an_error_that_shows_how_to_write_one(bad):
    with pytest.raises(UserError, match=f"unknown key {bad!r}; write a tonic"):
        conditioner(key=True).key_id(bad)


def test_key_embedding_has_a_null_and_is_dropped_like_genre():
    c = conditioner(key=True)
    base = conds([0, 0], [120.0, 120.0], [2.0, 2.0], [1.0, 1.0])
    _, unknown = c(base)
    torch.testing.assert_close(unknown[:, 3], c.null[3].expand(2, -1))
    base.key = torch.tensor([c.key_id("Am"), c.key_id("C")])  # relatives: same notes, different classes
    _, tokens = c(base)
    assert not torch.allclose(tokens[0, 3], tokens[1, 3])
    torch.testing.assert_close(tokens[:, :3], unknown[:, :3])
    _, dropped = c(base, torch.tensor([[False, False, False, True], [False] * 4]))
    torch.testing.assert_close(dropped[0, 3], c.null[3])
    torch.testing.assert_close(dropped[1, 3], tokens[1, 3])
    assert base.repeat(2).key.tolist() == base.key.tolist() * 2
