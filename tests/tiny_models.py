"""Tiny ONNX models with the layouts of real exports, built by the tests themselves (no download)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_lama(path: Path, single_input: bool, size: int | None, output_255: bool, seed: int = 0) -> Path:
    """A few random 3x3 convolutions; the hole is filled with their output, the rest passes through
    (as LaMa's exports do), so every pixel of the result depends on the pre-processing being right."""
    generator = np.random.default_rng(seed)
    height = width = size if size is not None else "height"
    if size is None:
        width = "width"
    nodes, initializers, inputs = [], [], []
    if single_input:
        inputs.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, height, width]))
        initializers += [
            numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64), "starts_image"),
            numpy_helper.from_array(np.array([1, 3, 2**31, 2**31], np.int64), "ends_image"),
            numpy_helper.from_array(np.array([0, 3, 0, 0], np.int64), "starts_mask"),
            numpy_helper.from_array(np.array([1, 4, 2**31, 2**31], np.int64), "ends_mask"),
        ]
        nodes += [
            helper.make_node("Slice", ["input", "starts_image", "ends_image"], ["image"]),
            helper.make_node("Slice", ["input", "starts_mask", "ends_mask"], ["mask"]),
        ]
    else:
        inputs += [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, height, width]),
        ]
    first = generator.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32)
    second = generator.normal(0, 0.3, (3, 8, 3, 3)).astype(np.float32)
    initializers += [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2"),
                     numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                     numpy_helper.from_array(np.array(255.0 if output_255 else 1.0, np.float32), "scale")]  # fmt: skip
    nodes += [
        helper.make_node("Concat", ["image", "mask"], ["joined"], axis=1),
        helper.make_node("Conv", ["joined", "w1"], ["hidden"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["hidden"], ["active"]),
        helper.make_node("Conv", ["active", "w2"], ["raw"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["raw"], ["painted"]),
        helper.make_node("Sub", ["one", "mask"], ["keep"]),
        helper.make_node("Mul", ["image", "keep"], ["kept"]),
        helper.make_node("Mul", ["painted", "mask"], ["filled"]),
        helper.make_node("Add", ["kept", "filled"], ["blend"]),
        helper.make_node("Mul", ["blend", "scale"], ["output"]),
    ]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, height, width])
    graph = helper.make_graph(nodes, "tiny_lama", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


# The open-vocabulary engine's tiny OWLv2 and SAM (torch and transformers are imported inside, so
# that the tests and benchmarks that do not use them do not pay for the import).
SIDE = 64  # the tiny models' input side
PATCH = 16
QUERIES = (SIDE // PATCH) ** 2  # OWLv2 proposes one box per patch
SEED = 0


def _tokens() -> list[str]:
    letters = string.ascii_lowercase
    # As CLIP's: "!" is the pad token (id 0), start and end of text are the two highest ids.
    words = [*letters, *(f"{letter}</w>" for letter in letters), "th", "the</w>"]
    return ["!", '"', *words, "<|startoftext|>", "<|endoftext|>"]


def build_owlv2(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tokens = _tokens()
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    added = {"!": 0, "<|startoftext|>": len(tokens) - 2, "<|endoftext|>": len(tokens) - 1}
    (folder / "added_tokens.json").write_text(json.dumps(added))
    tokenizer_config = {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 16, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "processor_class": "Owlv2Processor"}))
    preprocessor = {
        "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Owlv2ImageProcessor", "processor_class": "Owlv2Processor",
        "resample": 2, "rescale_factor": 1 / 255, "size": {"height": SIDE, "width": SIDE},
    }  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    import torch

    torch.manual_seed(SEED)
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    config = Owlv2Config(
        text_config={
            "vocab_size": len(tokens), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 0,
            "bos_token_id": len(tokens) - 2, "eos_token_id": len(tokens) - 1,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": SIDE, "patch_size": PATCH,
        },
        projection_dim=32,
    )  # fmt: skip
    Owlv2ForObjectDetection(config).eval().save_pretrained(folder)


def build_sam(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    preprocessor = {
        "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "image_processor_type": "SamImageProcessor", "processor_class": "SamProcessor",
        "pad_size": {"height": SIDE, "width": SIDE}, "resample": 2, "rescale_factor": 1 / 255,
        "size": {"longest_edge": SIDE},
    }  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    import torch

    torch.manual_seed(SEED)
    from transformers import SamConfig, SamModel

    config = SamConfig(
        vision_config={
            "hidden_size": 32, "output_channels": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": SIDE, "patch_size": PATCH, "window_size": 2, "global_attn_indexes": [1],
            "mlp_dim": 64, "num_pos_feats": 8,
        },
        prompt_encoder_config={"hidden_size": 16, "image_size": SIDE, "patch_size": PATCH, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 16, "mlp_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "iou_head_hidden_dim": 16,
        },
    )  # fmt: skip
    SamModel(config).eval().save_pretrained(folder)




def tiny_isnet(path: Path, side: int = 1024) -> Path:
    """ISNet's layout (input `input` 1 x 3 x side x side; `output` 1 x 1 x side x side, a sigmoid; side
    outputs beside it) on one fixed computation: output = sigmoid(40 * mean over channels of the input),
    so that a mask read from it tells whether the pre-processing (v - 128) / 256 and the stretch were right."""
    weight = numpy_helper.from_array(np.full((1, 3, 1, 1), 40.0 / 3.0, np.float32), "weight")
    nodes = [
        helper.make_node("Conv", ["input", "weight"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["output"]),
        helper.make_node("Identity", ["logits"], ["1890"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_isnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, side, side]),
            helper.make_tensor_value_info("1890", TensorProto.FLOAT, [1, 1, side, side]),
        ],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
