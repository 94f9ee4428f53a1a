"""Prompts to COCO queries: names, plurals, synonyms, several objects, colour attributes."""

from __future__ import annotations

import pytest

from retouch.detection.vocabulary import COCO_CLASSES, parse_prompt, plural
from retouch.errors import InvalidInput


def labels(prompt: str) -> list[tuple[str, ...]]:
    return [query.labels for query in parse_prompt(prompt)]


def test_every_coco_name_and_its_plural_is_known():
    assert len(COCO_CLASSES) == 80
    for name in COCO_CLASSES:
        assert labels(name) == [(name,)]
        assert labels(plural(name)) == [(name,)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Sofa", [("couch",)]),
        ("people", [("person",)]),
        ("a man", [("person",)]),
        ("two women", [("person",)]),
        ("children", [("person",)]),
        ("television", [("tv",)]),
        ("TV", [("tv",)]),
        ("motorbike", [("motorcycle",)]),
        ("the puppies", [("dog",)]),
        ("mugs", [("cup",)]),
        ("knives", [("knife",)]),
        ("mice", [("mouse",)]),
        ("hot dogs", [("hot dog",)]),
        ("cell phones", [("cell phone",)]),
        ("a mobile phone", [("cell phone",)]),
    ],
)
def test_synonyms_and_plurals(prompt, expected):
    assert labels(prompt) == expected


@pytest.mark.parametrize("prompt", ["dog and cat", "dog, cat", "dog & cat", "a dog with a cat", "dog; cat"])
def test_several_objects_in_one_prompt(prompt):
    assert labels(prompt) == [("dog",), ("cat",)]


def test_colours_attach_to_the_next_object():
    queries = parse_prompt("white horse and a black dog")
    assert [(query.labels, query.colours) for query in queries] == [(("horse",), ("white",)), (("dog",), ("black",))]
    assert parse_prompt("red and white bus")[-1].colours == ("white",)
    assert parse_prompt("grey cat")[0].colours == ("gray",)


def test_orange_is_a_colour_before_an_object_and_a_fruit_alone():
    assert [(q.labels, q.colours) for q in parse_prompt("orange cat")] == [(("cat",), ("orange",))]
    assert [(q.labels, q.colours) for q in parse_prompt("an orange")] == [(("orange",), ())]


def test_prompt_without_a_known_object_lists_the_vocabulary():
    with pytest.raises(InvalidInput) as caught:
        parse_prompt("a unicorn on a rainbow")
    message = caught.value.message
    assert "unicorn" in message
    assert "teddy bear" in message and "couch" in message
    assert "open-vocabulary" in message
