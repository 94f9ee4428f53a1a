"""Tiny random-weight stand-ins for bg-replace's diffusion checkpoints, built here from small configs.

Each is written in the layout (and with the file names) of the hub repository it stands for, so the
engine loads it with its real loading code (`from_pretrained`, `load_ip_adapter`), and
`retouch models pull --trust-local` accepts it as a pulled model. Nothing is downloaded: the CLIP
tokenizers are a byte-level vocabulary made here, without merges.

The sizes follow diffusers' own fast pipeline tests (32/64 channels, 2 blocks, 5-layer text encoders), but
the VAE and the ControlNet's condition encoder scale by 8 as SDXL's do.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from retouch.config import Settings
from retouch.engines.diffusion import CHECKPOINTS, IMAGE_ENCODER_FOLDER, IP_ADAPTER_WEIGHTS
from retouch.weights import hub
from retouch.weights.store import weight_path

CROSS_ATTENTION_DIM = 64
TEXT_HIDDEN = 32
# SDXL's added condition: 6 time ids embedded in 8 each, plus the second encoder's pooled projection.
ADDITION_TIME_EMBED_DIM = 8
TEXT_PROJECTION = 32
IMAGE_PROJECTION = 32


def byte_vocabulary() -> dict[str, int]:
    """Every byte as a token (GPT-2's byte-to-unicode map), alone and as a word's end, and CLIP's two specials."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    vocabulary = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for character in map(chr, codes):
        vocabulary.setdefault(character, len(vocabulary))
    for character in map(chr, codes):
        vocabulary.setdefault(character + "</w>", len(vocabulary))
    return vocabulary


def _write_tokenizer(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = byte_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return len(vocabulary)


def _unet_kwargs() -> dict[str, object]:
    return {
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "attention_head_dim": (2, 4),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": ADDITION_TIME_EMBED_DIM,
        "transformer_layers_per_block": (1, 2),
        "projection_class_embeddings_input_dim": 6 * ADDITION_TIME_EMBED_DIM + TEXT_PROJECTION,
        "cross_attention_dim": CROSS_ATTENTION_DIM,
    }


def write_pipeline(folder: Path) -> None:
    """The SDXL inpainting repository's layout: UNet (9 input channels), both text encoders and tokenizers, scheduler."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    _tiny_unet().save_pretrained(folder / "unet", variant="fp16")
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    scheduler.save_pretrained(folder / "scheduler")
    vocabulary_size = _write_tokenizer(folder / "tokenizer")
    _write_tokenizer(folder / "tokenizer_2")
    text_config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=vocabulary_size,
        hidden_act="gelu",
        projection_dim=TEXT_PROJECTION,
    )
    torch.manual_seed(1)
    CLIPTextModel(text_config).save_pretrained(folder / "text_encoder", variant="fp16")
    torch.manual_seed(2)
    CLIPTextModelWithProjection(text_config).save_pretrained(folder / "text_encoder_2", variant="fp16")
    index = {
        "_class_name": "StableDiffusionXLInpaintPipeline",
        "_diffusers_version": "0.21.0",
        "force_zeros_for_empty_prompt": True,
        "requires_aesthetics_score": False,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def write_vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(3)
    # Four blocks, as SDXL's VAE has: latents an eighth of the image's side (with two, a 1024-pixel image
    # would have 512 x 512 latents, and attention over them takes minutes).
    vae = AutoencoderKL(
        block_out_channels=[8, 8, 16, 16],
        layers_per_block=1,
        norm_num_groups=8,
        # Without the attention over all latents in its middle, which is most of a tiny VAE's time at 1024 pixels.
        mid_block_add_attention=False,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        # As the fp16-fix VAE's config says: it runs in half precision without being cast up.
        force_upcast=False,
    )
    vae.save_pretrained(folder)


def write_controlnet(folder: Path) -> None:
    from diffusers import ControlNetModel

    torch.manual_seed(4)
    # The condition is brought down to the latents' size, an eighth: three halvings.
    controlnet = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(16, 16, 32, 32), **_unet_kwargs())
    # A new ControlNet's output convolutions start at zero (it adds nothing until trained): give them weights,
    # as a trained one has, so that its condition and cn_weight change what it adds.
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                parameter.normal_(0.0, 0.05)
    controlnet.save_pretrained(folder, variant="fp16")


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32, in_channels=9, out_channels=4, up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **_unet_kwargs()
    )


def ip_adapter_tensors(unet, image_embedding: int, seed: int = 5) -> dict[str, torch.Tensor]:
    """An IP-Adapter checkpoint for `unet`, random, in the original checkpoints' layout: the projection
    ("image_proj.") and each cross-attention layer's key and value weights ("ip_adapter.N.", numbered
    1, 3, 5, ... in the UNet's order of attention processors, as the originals are)."""
    generator = torch.Generator().manual_seed(seed)
    cross_attention_dim = unet.config.cross_attention_dim
    channels = list(unet.config.block_out_channels)

    def random(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * 0.05).to(torch.float16)

    tokens = 4
    tensors = {
        "image_proj.proj.weight": random(tokens * cross_attention_dim, image_embedding),
        "image_proj.proj.bias": random(tokens * cross_attention_dim),
        "image_proj.norm.weight": torch.ones(cross_attention_dim, dtype=torch.float16),
        "image_proj.norm.bias": torch.zeros(cross_attention_dim, dtype=torch.float16),
    }
    index = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        tensors[f"ip_adapter.{index}.to_k_ip.weight"] = random(hidden, cross_attention_dim)
        tensors[f"ip_adapter.{index}.to_v_ip.weight"] = random(hidden, cross_attention_dim)
        index += 2
    return tensors


def as_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A checkpoint's flat tensors as the nested dict diffusers' IP-Adapter loader takes."""
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in tensors.items():
        part, _, name = key.partition(".")
        nested[part][name] = value
    return nested


def write_ip_adapter(folder: Path) -> None:
    """The IP-Adapter repository's layout: the adapter's safetensors and a CLIP vision encoder."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    weights = folder / IP_ADAPTER_WEIGHTS
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(ip_adapter_tensors(_tiny_unet(), IMAGE_PROJECTION), str(weights))
    torch.manual_seed(6)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            image_size=32,
            projection_dim=IMAGE_PROJECTION,
            intermediate_size=37,
            num_attention_heads=4,
            num_channels=3,
            num_hidden_layers=2,
            patch_size=8,
        )
    )
    encoder.save_pretrained(folder / IMAGE_ENCODER_FOLDER)


WRITERS = {
    "pipeline": write_pipeline,
    "vae": write_vae,
    "controlnet": write_controlnet,
    "ip_adapter": write_ip_adapter,
}


def install_tiny_checkpoints(settings: Settings) -> None:
    """Write every checkpoint into its hub folder and record it as pulled (as `pull --trust-local` does)."""
    for role, name in CHECKPOINTS.items():
        WRITERS[role](weight_path(name, settings))
        hub.trust_local(name, settings)
