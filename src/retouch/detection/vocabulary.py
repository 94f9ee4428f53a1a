"""From a prompt ("white horse and a dog") to queries over the 80 COCO classes.

The offline detector knows only the COCO classes, so a prompt is read as object words (the COCO
names, their plurals and common synonyms) with optional colour words before them. Several
objects can be named in one prompt ("dog and cat", "dog, cat"). A prompt with no object word
the detector knows is refused with the vocabulary listed; the open-vocabulary engines take any words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from retouch.errors import InvalidInput

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
_VEHICLES = ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat")
_FOODS = ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake")
_TABLEWARE = ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl")

# COCO's supercategories whose members cannot be one object: a box is a dog or a sheep, never both (a
# tie and a person, a plant and its table, can share one). The class id of each member -> its group.
EXCLUSIVE_GROUP: dict[int, int] = {
    COCO_CLASSES.index(name): number for number, group in enumerate((_ANIMALS, _VEHICLES, _FOODS, _TABLEWARE)) for name in group
}

# Other words for a class (singular; plurals are derived). A word may stand for several classes.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "people": ("person",), "man": ("person",), "men": ("person",), "woman": ("person",), "women": ("person",),
    "child": ("person",), "children": ("person",), "kid": ("person",), "boy": ("person",), "girl": ("person",),
    "baby": ("person",), "human": ("person",), "guy": ("person",), "lady": ("person",), "ladies": ("person",),
    "player": ("person",), "pedestrian": ("person",), "astronaut": ("person",), "face": ("person",),
    "bike": ("bicycle",), "cycle": ("bicycle",),
    "automobile": ("car",), "taxi": ("car",), "sedan": ("car",), "jeep": ("car",),
    "motorbike": ("motorcycle",), "scooter": ("motorcycle",),
    "plane": ("airplane",), "aeroplane": ("airplane",), "aircraft": ("airplane",), "jet": ("airplane",),
    "coach": ("bus",), "locomotive": ("train",), "tram": ("train",), "lorry": ("truck",), "pickup": ("truck",),
    "ship": ("boat",), "yacht": ("boat",), "canoe": ("boat",), "kayak": ("boat",), "sailboat": ("boat",),
    "vehicle": _VEHICLES, "animal": _ANIMALS, "pet": ("cat", "dog"),
    "hydrant": ("fire hydrant",), "kitten": ("cat",), "kitty": ("cat",), "puppy": ("dog",), "puppies": ("dog",),
    "pony": ("horse",), "lamb": ("sheep",), "cattle": ("cow",), "bull": ("cow",), "calf": ("cow",), "calves": ("cow",),
    "rucksack": ("backpack",), "bag": ("backpack", "handbag", "suitcase"), "purse": ("handbag",),
    "necktie": ("tie",), "luggage": ("suitcase",), "ski": ("skis",),
    "ball": ("sports ball",), "football": ("sports ball",), "soccer ball": ("sports ball",),
    "basketball": ("sports ball",), "tennis ball": ("sports ball",), "racket": ("tennis racket",),
    "mug": ("cup",), "teacup": ("cup",), "coffee cup": ("cup",), "glass": ("wine glass", "cup"),
    "doughnut": ("donut",), "hotdog": ("hot dog",),
    "sofa": ("couch",), "settee": ("couch",), "plant": ("potted plant",), "houseplant": ("potted plant",),
    "table": ("dining table",), "desk": ("dining table",), "television": ("tv",), "monitor": ("tv",),
    "screen": ("tv", "laptop"), "tvmonitor": ("tv",), "computer": ("laptop",), "notebook": ("laptop",),
    "remote control": ("remote",), "phone": ("cell phone",), "mobile phone": ("cell phone",),
    "smartphone": ("cell phone",), "cellphone": ("cell phone",), "fridge": ("refrigerator",),
    "teddy": ("teddy bear",), "stuffed animal": ("teddy bear",), "hair dryer": ("hair drier",),
    "hairdryer": ("hair drier",), "loveseat": ("couch",), "armchair": ("chair", "couch"), "stool": ("chair",),
}  # fmt: skip

COLOURS: dict[str, str] = {
    "white": "white", "black": "black", "gray": "gray", "grey": "gray", "silver": "gray",
    "red": "red", "orange": "orange", "yellow": "yellow", "golden": "yellow", "gold": "yellow",
    "green": "green", "blue": "blue", "purple": "purple", "violet": "purple", "pink": "pink", "brown": "brown",
}  # fmt: skip

_IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors"}
_SEPARATORS = re.compile(r"\s*(?:,|;|&|\+|\band\b|\bor\b|\bwith\b|\bplus\b)\s*")


def plural(word: str) -> str:
    """English plural of the last word of a name ('wine glass' -> 'wine glasses')."""
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        result = _IRREGULAR_PLURALS[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        result = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        result = last[:-1] + "ies"
    else:
        result = last + "s"
    return f"{head} {result}" if head else result


def _build_terms() -> dict[str, tuple[int, ...]]:
    index = {name: position for position, name in enumerate(COCO_CLASSES)}
    terms: dict[str, tuple[int, ...]] = {}
    for name in COCO_CLASSES:
        terms[name] = (index[name],)
        terms.setdefault(plural(name), (index[name],))
    for word, classes in SYNONYMS.items():
        ids = tuple(index[name] for name in classes)
        terms[word] = ids
        terms.setdefault(plural(word), ids)
    return terms


TERMS: dict[str, tuple[int, ...]] = _build_terms()
_LONGEST_TERM = max(len(term.split()) for term in TERMS)


@dataclass(frozen=True)
class Query:
    """One object named in a prompt: the words, the COCO classes they stand for, and colour attributes."""

    phrase: str
    class_ids: tuple[int, ...]
    colours: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(COCO_CLASSES[class_id] for class_id in self.class_ids)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _parse_phrase(phrase: str) -> list[Query]:
    words = _words(phrase)
    queries: list[Query] = []
    colours: list[str] = []
    position = 0
    while position < len(words):
        match = None
        for length in range(min(_LONGEST_TERM, len(words) - position), 0, -1):
            term = " ".join(words[position : position + length])
            if term in TERMS:
                match = (term, length)
                break
        word = words[position]
        # 'orange' is a colour when an object word follows it, the fruit otherwise.
        follows = any(" ".join(words[position + 1 : position + 1 + n]) in TERMS for n in range(1, _LONGEST_TERM + 1))
        if word in COLOURS and (match is None or follows):
            colours.append(COLOURS[word])
            position += 1
            continue
        if match is not None:
            term, length = match
            queries.append(Query(phrase=" ".join([*(c for c in colours), term]), class_ids=TERMS[term], colours=tuple(colours)))
            colours = []
            position += length
            continue
        position += 1
    return queries


def split_phrases(prompt: str) -> list[str]:
    """The phrases of a prompt, in order, without repeats: "white horse and a dog" -> ["white horse", "a dog"].

    Split on commas, semicolons, "&", "+", "and", "or", "with", "plus"; lower case, spaces collapsed.
    """
    phrases = (" ".join(part.split()) for part in _SEPARATORS.split(prompt.lower()))
    return list(dict.fromkeys(phrase for phrase in phrases if phrase))


def parse_prompt(prompt: str) -> list[Query]:
    """The objects a prompt names. Raises InvalidInput, listing the vocabulary, when it names none."""
    queries = [query for phrase in split_phrases(prompt) for query in _parse_phrase(phrase)]
    if not queries:
        raise InvalidInput(
            f"prompt={prompt!r} names no object the offline detector knows. It knows the 80 COCO classes "
            f"(and their plurals and common synonyms such as sofa, people, tv, motorbike): {', '.join(COCO_CLASSES)}. "
            "Colour words (white, red, ...) may come before them. Install the open-vocabulary engine for any words."
        )
    return queries
