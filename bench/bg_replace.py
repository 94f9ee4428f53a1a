"""bg-replace's two engines, in this process, each against its goal.

1. The offline composite at 1024 pixels (the subject's U²-Net mask included): median seconds per
   request over photos scikit-image ships, one sample each; goal at most 1.5 s. Ratio = median / 1.5.
2. The diffusion engine's time outside the denoising steps (the subject's mask, the control image, the
   text and image encoders, the VAE, resizing, pasting back) on the tiny random-weight checkpoints of
   the tests, with a 1024-pixel photo worked at 1024 x 1024: a request's time less the time in the
   UNet's and the ControlNet's forward passes (timed by forward hooks); goal under 0.5 s.
   Ratio = median overhead / 0.5.

    .venv/bin/python bench/bg_replace.py [--rounds 5] [--steps 4]

`--real-size` (for a GPU machine) builds SDXL's real architecture (UNet, ControlNet, VAE, both text
encoders, a ViT-H image encoder) with random weights and reports seconds per request at 1024 pixels
and 25 steps, beside the hosted service's ~9 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from retouch.config import Settings
from retouch.engines.cache import EngineCache
from retouch.models import MODELS
from retouch.models.base import RunContext

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

COMPOSITE_GOAL_S = 1.5
OVERHEAD_GOAL_S = 0.5
HOSTED_SECONDS = 9.0


def at_long_side(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (round(width * scale), round(height * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def photos() -> dict[str, np.ndarray]:
    return {name: at_long_side(getattr(data, name)(), 1024) for name in ("astronaut", "chelsea", "coffee", "rocket")}


def parameters(**overrides: object):
    model = MODELS["bg-replace"]
    return model.Input(image="x", ref_image="y", prompt="a wooden table by a window", seed=1, **overrides)


def bench_composite(rounds: int) -> float:
    settings = Settings(bg_replace_engine="composite")
    model = MODELS["bg-replace"]
    engines = EngineCache(settings)
    reference = at_long_side(data.coffee(), 1024)
    params = parameters()
    with engines.use(model) as engine:
        times: dict[str, list[float]] = {}
        for name, photo in photos().items():
            images = {"image": photo, "ref_image": reference}
            model.run(params, images, engine, RunContext())  # warm-up
            for _ in range(rounds):
                started = time.perf_counter()
                model.run(params, images, engine, RunContext())
                times.setdefault(name, []).append(time.perf_counter() - started)
    for name, values in times.items():
        print(f"  composite {name:<10} {photos()[name].shape[1]}x{photos()[name].shape[0]}: {statistics.median(values):.3f} s")
    median = statistics.median([value for values in times.values() for value in values])
    print(f"composite at 1024 pixels: median {median:.3f} s; goal {COMPOSITE_GOAL_S} s; ratio {median / COMPOSITE_GOAL_S:.2f}")
    return median


class ModuleClock:
    """Seconds spent in each named torch module's forward passes (forward hooks), summed."""

    def __init__(self, modules: dict[str, object]) -> None:
        self.seconds = dict.fromkeys(modules, 0.0)
        self._started: dict[str, float] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda _module, _inputs, name=name: self._start(name))
            module.register_forward_hook(lambda _module, _inputs, _output, name=name: self._stop(name))

    def _start(self, name: str) -> None:
        self._started[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        self.seconds[name] += time.perf_counter() - self._started.pop(name)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


def bench_diffusion_overhead(rounds: int, steps: int) -> float:
    from tiny_diffusion import install_tiny_checkpoints

    from retouch.engines.diffusion import DiffusionEngine, Generation
    from retouch.engines.u2net import U2NetEngine

    with tempfile.TemporaryDirectory() as folder:
        installed = Settings().weights_path
        weights = Path(folder) / "weights"
        weights.mkdir()
        (weights / "u2net.onnx").symlink_to(installed / "u2net.onnx")
        settings = Settings(home=Path(folder) / "home", weights_dir=weights, bg_replace_resolution=1024)
        install_tiny_checkpoints(settings)
        engine = DiffusionEngine.from_settings(settings)
        engine.setup("cpu")
        masker = U2NetEngine.from_settings(settings, variant="u2net")
        masker.setup("cpu")
        pipeline = engine.pipeline
        clock = ModuleClock(
            {
                "unet": pipeline.unet,
                "controlnet": pipeline.controlnet,
                "vae encoder": pipeline.vae.encoder,
                "vae decoder": pipeline.vae.decoder,
                "text encoders": pipeline.text_encoder,
                "text encoder 2": pipeline.text_encoder_2,
                "image encoder": pipeline.image_encoder,
            }
        )
        photo = cv2.resize(data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
        reference = data.coffee()
        generation = Generation(
            prompt="a wooden table by a window",
            negative_prompt="",
            scheduler="DPM2 Karras",
            num_inference_steps=steps,
            guidance_scale=7.5,
            strength=1.0,
            cn_weight=0.9,
            ip_adapter_weight=0.5,
            seeds=(1,),
        )
        outside, parts = [], []
        for round_index in range(rounds + 1):
            clock.reset()
            started = time.perf_counter()
            mask = masker.predict(photo)
            masked = time.perf_counter()
            engine.replace(photo, mask, reference, generation)
            total = time.perf_counter() - started
            if round_index == 0:
                continue  # warm-up
            denoising = clock.seconds["unet"] + clock.seconds["controlnet"]
            outside.append(total - denoising)
            parts.append(dict(clock.seconds, total=total, mask=masked - started))
    median = statistics.median(outside)
    typical = parts[outside.index(median)] if median in outside else parts[0]
    vae = typical["vae encoder"] + typical["vae decoder"]
    encoders = typical["text encoders"] + typical["text encoder 2"] + typical["image encoder"]
    print(f"  {steps} steps at 1024 x 1024: {typical['total']:.3f} s in all, denoising (UNet + ControlNet) "
          f"{typical['unet'] + typical['controlnet']:.3f} s")  # fmt: skip
    print(f"  outside it: the subject's mask (U²-Net) {typical['mask']:.3f} s, VAE {vae:.3f} s, text and image encoders {encoders:.3f} s, "
          f"the rest (control image, resizing, the pipeline's own preparation, pasting back) {median - typical['mask'] - vae - encoders:.3f} s")  # fmt: skip
    print(f"diffusion engine, tiny checkpoints at 1024 pixels, outside the denoising steps: median {median:.3f} s; "
          f"goal under {OVERHEAD_GOAL_S} s; ratio {median / OVERHEAD_GOAL_S:.2f}")  # fmt: skip
    return median


def bench_real_size(rounds: int) -> None:
    """SDXL's real architecture, random weights, on the GPU: seconds per request at 1024 pixels and 25 steps."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetInpaintPipeline, UNet2DConditionModel
    from PIL import Image
    from tiny_diffusion import as_state_dict, byte_vocabulary, ip_adapter_tensors
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    device, dtype = ("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.float32)
    sdxl = {
        "block_out_channels": (320, 640, 1280),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "attention_head_dim": (5, 10, 20),
        "transformer_layers_per_block": (1, 2, 10),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "cross_attention_dim": 2048,
    }
    unet = UNet2DConditionModel(in_channels=9, out_channels=4, up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), **sdxl)
    controlnet = ControlNetModel(in_channels=4, **sdxl)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        scaling_factor=0.13025,
        force_upcast=False,
    )
    clip_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768)
    clip_g = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32, projection_dim=1280,
                            hidden_act="gelu")  # fmt: skip
    tokenizer = CLIPTokenizer(vocab=byte_vocabulary(), merges=[], model_max_length=77)
    vit_h = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32, patch_size=14,
                             image_size=224, projection_dim=1024)  # fmt: skip
    image_encoder = CLIPVisionModelWithProjection(vit_h)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading")
    pipeline = StableDiffusionXLControlNetInpaintPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(clip_l),
        text_encoder_2=CLIPTextModelWithProjection(clip_g),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        controlnet=controlnet,
        scheduler=scheduler,
        image_encoder=image_encoder,
        feature_extractor=CLIPImageProcessor(size=224, crop_size=224),
        requires_aesthetics_score=False,
    )
    pipeline.unet._load_ip_adapter_weights([as_state_dict(ip_adapter_tensors(unet, image_embedding=1024))])
    pipeline.to(device, dtype)
    pipeline.set_progress_bar_config(disable=True)
    photo = Image.fromarray(cv2.resize(data.astronaut(), (1024, 1024)))
    mask = Image.fromarray(np.where(np.arange(1024)[None, :] < 512, 255, 0).astype(np.uint8).repeat(1024, 0))
    times = []
    for round_index in range(rounds + 1):
        started = time.perf_counter()
        pipeline(prompt="a wooden table", image=photo, mask_image=mask, control_image=photo, ip_adapter_image=photo, num_inference_steps=25,
                 height=1024, width=1024, generator=torch.Generator("cpu").manual_seed(round_index), output_type="np")  # fmt: skip
        if device == "cuda":
            torch.cuda.synchronize()
        if round_index:
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"real-size SDXL inpainting + ControlNet + IP-Adapter, random weights, {device} {dtype}, 1024 px, 25 steps: "
          f"{median:.2f} s per request; hosted about {HOSTED_SECONDS:.0f} s; ratio {median / HOSTED_SECONDS:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="Denoising steps of the shorter diffusion request.")
    parser.add_argument("--real-size", action="store_true", help="Only the real-size architecture (for a GPU).")
    arguments = parser.parse_args()
    if arguments.real_size:
        bench_real_size(arguments.rounds)
        return
    bench_composite(arguments.rounds)
    bench_diffusion_overhead(arguments.rounds, arguments.steps)


if __name__ == "__main__":
    main()
