"""What depends on a model family lives in its adapter (blade_ops/families/): no code outside that package spells a
family's name as a string (a comparison, a dict key, a default); it asks the adapter. Prose in docstrings and
messages may still name the models."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

from blade_ops.families import FAMILIES, family_of_transformer, family_of_vae_config, get_family

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("blade_ops", "nodes", "training")


def _family_literals(path: Path) -> list[tuple[int, str]]:
    """(line, literal) of every string token of ``path`` whose value is exactly a family name."""
    found = []
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    for tok in tokens:
        if tok.type != tokenize.STRING:
            continue
        try:
            value = ast.literal_eval(tok.string)
        except (ValueError, SyntaxError):  # f-strings
            continue
        if isinstance(value, str) and value.lower() in FAMILIES:
            found.append((tok.start[0], tok.string))
    return found


def test_no_family_name_is_spelled_outside_the_adapters():
    offenders = []
    for top in CHECKED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "families" in path.relative_to(ROOT).parts:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{line}: {text}" for line, text in _family_literals(path)]
    assert not offenders, "ask the family adapter instead of testing a name:\n" + "\n".join(offenders)


def test_the_check_finds_a_name_test(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Prose about wan is fine."""\nif family == "wan":\n    pass\nx = {\'cogvideox\': 1}\n')
    assert [line for line, _ in _family_literals(sample)] == [2, 4]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_adapter_answers_for_its_own_models(name):
    from blade_ops.models.tiny import tiny_transformer, tiny_vae

    family = get_family(name)
    transformer, vae = tiny_transformer(name), tiny_vae(name)
    # A family whose weights look like another's (Wan2.2 A14B's experts have Wan2.1-14B shapes) is never picked
    # from a model alone, only by name or from its pipeline folder: the model then belongs to its architecture.
    expected = family if family.auto_detect else get_family(family.arch)
    assert family_of_transformer(transformer) is expected
    assert family_of_vae_config(dict(vae.config)) is expected
    assert len(family.self_attentions(transformer)) == transformer.config.num_layers
    assert family.latent_channels_of(transformer) == transformer.config.in_channels
    shape = family.latent_shape(2, (3, 4, 5), channels=7)
    assert sorted(shape) == sorted((2, 7, 3, 4, 5)) and shape[0] == 2
    assert family.tiny_transformer_config()["num_layers"] == 2
