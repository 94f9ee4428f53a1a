"""The Input schema of every slug: names, defaults, ranges and required fields as the contract lists them."""

from __future__ import annotations

import pytest

from retouch.errors import InvalidInput
from retouch.models import MODELS
from retouch.models.validation import coerce_form_fields, parse_input

SEED = (-1, -1, 999_999_999_999_999)

# slug -> {parameter: (default, minimum, maximum)}; None where there is no default or range.
CONTRACT = {
    "magic-eraser": {
        "image": None, "mask": None, "invert_mask": (False, None, None), "grow_mask": (10, 0, 100),
        "seed": SEED, "base64": (False, None, None),
    },
    "background-eraser": {
        "image": None, "return_mask": (True, None, None), "invert_mask": (False, None, None),
        "grow_mask": (0, 0, 50), "base64": (False, None, None),
    },
    "automatic-mask-generator": {
        "image": None, "prompt": None, "threshold": (0.2, 0, 1), "stop_on_empty_mask": (False, None, None),
        "invert_mask": (False, None, None), "return_mask": (True, None, None), "return_alpha": (False, None, None),
        "grow_mask": (10, 0, 100), "seed": SEED, "base64": (False, None, None),
    },
    "inpaint-mask-maker": {
        "image": None, "prompt": None, "confidence_thresh": (0.5, 0, 1), "iou_thresh": (0.2, 0, 1),
        "return_mask": (False, None, None), "invert_mask": (False, None, None), "grow_mask": (10, 0, 100),
        "base64": (False, None, None),
    },
    "bg-replace": {
        "image": None, "ref_image": None, "prompt": None, "negative_prompt": ("", None, None), "samples": (1, 1, 4),
        "scheduler": ("DPM2 Karras", None, None), "num_inference_steps": (25, 20, 100), "guidance_scale": (7.5, 1, 25),
        "seed": SEED, "strength": (1, 0, 1), "cn_weight": (0.9, 0, 1), "ip_adapter_weight": (0.5, 0, 1),
        "base64": (False, None, None),
    },
}
REQUIRED = {"image", "mask", "ref_image", "prompt"}


@pytest.mark.parametrize("slug", sorted(CONTRACT))
def test_schema_matches_contract(slug):
    schema = MODELS[slug].Input.model_json_schema()
    properties = schema["properties"]
    assert set(properties) == set(CONTRACT[slug]) | {"output_format"}
    assert set(schema["required"]) == REQUIRED & set(CONTRACT[slug])
    for name, expected in CONTRACT[slug].items():
        if expected is None:
            continue
        default, minimum, maximum = expected
        assert properties[name]["default"] == default, name
        assert properties[name].get("minimum") == minimum, name
        assert properties[name].get("maximum") == maximum, name


@pytest.mark.parametrize("slug", sorted(CONTRACT))
def test_ranges_are_enforced_at_both_ends(slug):
    input_class = MODELS[slug].Input
    base = {name: "x" for name in REQUIRED & set(CONTRACT[slug])}
    for name, expected in CONTRACT[slug].items():
        if expected is None or expected[1] is None:
            continue
        _, minimum, maximum = expected
        parse_input(input_class, {**base, name: minimum})
        parse_input(input_class, {**base, name: maximum})
        for bad in (minimum - 1, maximum + 1):
            with pytest.raises(InvalidInput, match=rf"{name}=.*allowed {minimum} to {maximum}"):
                parse_input(input_class, {**base, name: bad})


def test_scheduler_names_are_the_contract_table():
    names = MODELS["bg-replace"].Input.model_json_schema()["properties"]["scheduler"]["enum"]
    assert names == [
        "DDIM", "DPM Multi", "DPM Single", "Euler a", "Euler", "Heun",
        "DPM2 a Karras", "DPM2 Karras", "LMS", "PNDM", "DDPM", "UniPC",
    ]
    with pytest.raises(InvalidInput, match="scheduler='Karras'"):
        parse_input(MODELS["bg-replace"].Input, {"image": "a", "ref_image": "b", "prompt": "c", "scheduler": "Karras"})


def test_all_problems_are_listed_in_one_message():
    with pytest.raises(InvalidInput) as caught:
        parse_input(MODELS["magic-eraser"].Input, {"image": "a", "grow_mask": 500, "colour": 1})
    message = caught.value.message
    assert "missing required parameter 'mask'" in message
    assert "grow_mask=500 is out of range: allowed 0 to 100" in message
    assert "unknown parameter 'colour'" in message


def test_form_fields_are_typed_as_json_would_type_them():
    input_class = MODELS["automatic-mask-generator"].Input
    typed = coerce_form_fields(input_class, {"prompt": "123", "threshold": "0.5", "return_mask": "false", "grow_mask": "7"})
    assert typed == {"prompt": "123", "threshold": 0.5, "return_mask": False, "grow_mask": 7}
    params = parse_input(input_class, {**typed, "image": "x"})
    assert params.prompt == "123" and params.return_mask is False
