"""bg-replace's generative engine: SDXL inpainting over the background, held by a ControlNet, styled by an IP-Adapter.

One request: the subject's mask (the background-eraser's U²-Net, or the photo's own alpha when it is a
cut-out); the photo scaled so that its area is about `resolution` squared (SDXL's training size) with
both sides multiples of 64; the background (everything but the subject's solid core) repainted by
`StableDiffusionXLControlNetInpaintPipeline` from `prompt`, with `ref_image` through the IP-Adapter
(`set_ip_adapter_scale(ip_adapter_weight)`) and the ControlNet at `controlnet_conditioning_scale =
cn_weight`; each result scaled back to the photo's size and the subject's own pixels pasted back over
it with a soft edge (imaging/matting.py), so the product is never redrawn.

Why the ControlNet is conditioned on edges (Canny) and not on depth. What the ControlNet must hold is
the subject's outline: without it the inpainting model grows the product past its mask or draws a
second one beside it. The edge map is made from the photo itself by OpenCV, restricted to the subject
(its silhouette and its inner edges; the background black, so free), with no second network to pull,
load and run on every request; a depth map would need a depth estimator, and it would carry the old
scene's geometry into the background that is to be replaced. The subject's interior is pasted back
anyway, so the outline is what matters.

Each request builds its scheduler fresh from the pipeline's config (a scheduler holds per-call state
and is not thread-safe) and a pipeline object of its own around the shared modules; the modules run
one request at a time (a lock), which is also what one GPU can do. Each sample has its own
`torch.Generator` (seed, seed + 1, ...) on the CPU, so a seed gives the same noise on any device.
On CUDA the modules are fp16 with PyTorch's scaled-dot-product attention (diffusers' default
processor, kept by the IP-Adapter's own); on the CPU, fp32.

torch, diffusers and transformers (the optional `full` extra) are imported when the engine is set
up, not when this module is imported.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np

from retouch.config import Settings
from retouch.engines.schedulers import SCHEDULERS
from retouch.errors import InvalidInput, ServiceUnavailable, WeightsMissing
from retouch.imaging.matting import cut_out, lay_over

logger = logging.getLogger(__name__)

# The hub entries of the weights registry the engine loads, by the part each one is.
CHECKPOINTS: Mapping[str, str] = MappingProxyType(
    {"pipeline": "sdxl-inpainting", "vae": "sdxl-vae-fp16-fix", "controlnet": "controlnet-canny-sdxl", "ip_adapter": "ip-adapter-sdxl"}
)
IP_ADAPTER_WEIGHTS = "sdxl_models/ip-adapter_sdxl_vit-h.safetensors"
IMAGE_ENCODER_FOLDER = "models/image_encoder"
FULL_EXTRA_HINT = "install retouch's `full` extra (torch, diffusers, transformers): pip install 'retouch[full]'"
PULL_HINT = "run `retouch models pull bg-replace` (or set RETOUCH_BG_REPLACE_ENGINE=composite)"
# The working size's longer side is at most this many times the resolution.
MAX_SIDE_FACTOR = 2
# The working size's sides are multiples of this (the VAE's 8 times the UNet's downsampling).
SIDE_MULTIPLE = 64
# The subject's core that the inpainting keeps: the mask eroded by this share of the working side, so
# the generator repaints under the soft edge that the paste-back blends.
CORE_EROSION_SHARE = 0.008
CANNY_LOW, CANNY_HIGH = 100, 200
REFERENCE_SIDE = 448
# The pipeline's own settings, carried into each request's pipeline object.
PIPELINE_FLAGS = ("requires_aesthetics_score", "force_zeros_for_empty_prompt")


@dataclass(frozen=True)
class Generation:
    """What one bg-replace request asks of the generator (the contract's parameters, checked)."""

    prompt: str
    negative_prompt: str
    scheduler: str
    num_inference_steps: int
    guidance_scale: float
    strength: float
    cn_weight: float
    ip_adapter_weight: float
    seeds: tuple[int, ...]


def import_diffusers() -> Any:
    try:
        import diffusers
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise ServiceUnavailable(f"the diffusion engine of bg-replace needs torch, diffusers and transformers ({error}); {FULL_EXTRA_HINT}") from error
    return diffusers


def working_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(height, width) with the photo's aspect ratio, an area of about resolution², both multiples of 64;
    the longer side at most MAX_SIDE_FACTOR x resolution (SDXL's widest training shapes are about 4:1),
    so a panorama is worked smaller rather than as a strip the model never saw."""
    scale = math.sqrt(resolution * resolution / float(height * width))
    scale = min(scale, MAX_SIDE_FACTOR * resolution / float(max(height, width)))

    def side(length: int) -> int:
        return max(SIDE_MULTIPLE, round(length * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE)

    return side(height), side(width)


def subject_edges(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The ControlNet's condition: Canny edges of the subject and its silhouette, white on black, RGB uint8."""
    grey = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    subject = mask >= 128
    edges = cv2.Canny(grey, CANNY_LOW, CANNY_HIGH)
    edges[~subject] = 0
    outline = cv2.morphologyEx(subject.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    edges[outline > 0] = 255
    return np.repeat(edges[..., np.newaxis], 3, axis=2)


def repaint_mask(mask: np.ndarray) -> np.ndarray:
    """The inpainting mask (255 = repaint): everything but the subject's core."""
    radius = max(1, round(max(mask.shape) * CORE_EROSION_SHARE))
    core = cv2.erode((mask >= 128).astype(np.uint8) * 255, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
    return 255 - core


def adapter_reference(reference: np.ndarray) -> np.ndarray:
    """`ref_image` as the IP-Adapter's image encoder should get it: its centre, at most 2:1, at most REFERENCE_SIDE
    on its longer side (the encoder sees a 224-pixel square; a panorama given whole would be resized to a huge strip)."""
    rgb = np.ascontiguousarray(reference[..., :3])
    height, width = rgb.shape[:2]
    if width > 2 * height:
        left = (width - 2 * height) // 2
        rgb = rgb[:, left : left + 2 * height]
    elif height > 2 * width:
        top = (height - 2 * width) // 2
        rgb = rgb[top : top + 2 * width]
    longer = max(rgb.shape[:2])
    if longer > REFERENCE_SIDE:
        scale = REFERENCE_SIDE / longer
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    if array.shape[1] == width and array.shape[0] == height:
        return array
    shrinking = width * height < array.shape[0] * array.shape[1]
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def make_scheduler(name: str, config: Any) -> Any:
    """A new scheduler of the contract's `name`, from the pipeline's scheduler config."""
    diffusers = import_diffusers()
    try:
        class_name, extra = SCHEDULERS[name]
    except KeyError:
        raise InvalidInput(f"scheduler={name!r} is not one of: {', '.join(SCHEDULERS)}") from None
    return getattr(diffusers, class_name).from_config(config, **extra)


def _free_memory(torch: Any) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class DiffusionEngine:
    """`name` is what metrics.engine reports. `setup` loads the checkpoints once; `replace` runs one request."""

    name = "diffusion"

    def __init__(self, folders: Mapping[str, Path], resolution: int, requested_device: str = "auto") -> None:
        missing = sorted(set(CHECKPOINTS) - set(folders))
        if missing:
            raise ValueError(f"the diffusion engine needs a folder for each of {', '.join(CHECKPOINTS)}; missing {', '.join(missing)}")
        self.folders = {role: Path(folder) for role, folder in folders.items()}
        self.resolution = resolution
        # The torch device is chosen from the configured one, not from onnxruntime's providers (what the
        # engine cache passes to setup): a CUDA torch beside a CPU-only onnxruntime still runs on the GPU.
        self.requested_device = requested_device
        self.device = "cpu"
        self.dtype: Any = None
        self.pipeline: Any = None
        self.memory_bytes: int | None = None
        self._setup_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> DiffusionEngine:
        """The engine on the pulled checkpoints; WeightsMissing naming the pull command otherwise."""
        from retouch.weights.store import install_problem, weight_path

        problems = [(name, install_problem(name, settings)) for name in CHECKPOINTS.values()]
        missing = [f"{name} {problem} in {weight_path(name, settings)}" for name, problem in problems if problem is not None]
        if missing:
            raise WeightsMissing(f"bg-replace's diffusion engine cannot start: {'; '.join(missing)}; {PULL_HINT}")
        folders = {role: weight_path(name, settings) for role, name in CHECKPOINTS.items()}
        return cls(folders, resolution=settings.bg_replace_resolution, requested_device=settings.device)

    @property
    def ready(self) -> bool:
        return self.pipeline is not None

    def setup(self, device: str) -> None:
        with self._setup_lock:
            if self.ready:
                return
            diffusers = import_diffusers()
            import torch
            from diffusers.utils import logging as diffusers_logging
            from transformers.utils import logging as transformers_logging

            from retouch.engines.device import available_cpu_cores
            from retouch.engines.open_vocabulary import torch_device

            self.device = torch_device(self.requested_device)
            self.dtype = torch.float16 if self.device == "cuda" else torch.float32
            if self.device == "cpu":
                torch.set_num_threads(available_cpu_cores())
            # Weight-loading progress bars are noise in a server's log.
            diffusers_logging.disable_progress_bar()
            transformers_logging.disable_progress_bar()
            folders = self.folders
            # Loading logs a warning per module about casts and optional components: noise in a server's log.
            verbosity = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()
            try:
                controlnet = diffusers.ControlNetModel.from_pretrained(
                    folders["controlnet"], variant="fp16", dtype=self.dtype, local_files_only=True
                )
                vae = diffusers.AutoencoderKL.from_pretrained(folders["vae"], dtype=self.dtype, local_files_only=True)
                pipeline = diffusers.StableDiffusionXLControlNetInpaintPipeline.from_pretrained(
                    folders["pipeline"], controlnet=controlnet, vae=vae, variant="fp16", dtype=self.dtype, local_files_only=True
                )
                pipeline.load_ip_adapter(
                    str(folders["ip_adapter"]),
                    subfolder=str(Path(IP_ADAPTER_WEIGHTS).parent),
                    weight_name=Path(IP_ADAPTER_WEIGHTS).name,
                    image_encoder_folder=IMAGE_ENCODER_FOLDER,
                    local_files_only=True,
                )
                pipeline.to(self.device)
            except MemoryError as error:
                raise ServiceUnavailable(f"bg-replace's diffusion engine does not fit in this machine's memory: {error}") from error
            except RuntimeError as error:
                if isinstance(error, torch.OutOfMemoryError) or "alloc" in str(error).lower():
                    _free_memory(torch)
                    raise ServiceUnavailable(
                        f"bg-replace's diffusion engine does not fit in {self.device} memory ({error}); free memory, "
                        "or set RETOUCH_BG_REPLACE_ENGINE=composite"
                    ) from error
                raise WeightsMissing(
                    f"bg-replace's diffusion engine could not load its checkpoints from {', '.join(str(path) for path in folders.values())}: "
                    f"{error}; run `retouch models pull --force bg-replace`"
                ) from error
            except (OSError, ValueError, KeyError) as error:
                raise WeightsMissing(
                    f"bg-replace's diffusion engine could not load its checkpoints from {', '.join(str(path) for path in folders.values())}: "
                    f"{error}; run `retouch models pull --force bg-replace`"
                ) from error
            finally:
                diffusers_logging.set_verbosity(verbosity)
            pipeline.set_progress_bar_config(disable=True)
            # The engine cache's budget is this machine's memory: weights on a GPU do not count against it.
            self.memory_bytes = sum(
                parameter.numel() * parameter.element_size()
                for module in pipeline.components.values()
                if isinstance(module, torch.nn.Module)
                for parameter in module.parameters()
                if parameter.device.type == "cpu"
            )
            self.pipeline = pipeline
            logger.info("diffusion engine on %s (%s, %.1f GB of weights)", self.device, self.dtype, self.memory_bytes / 1e9)

    def close(self) -> None:
        self.pipeline = None
        import torch

        _free_memory(torch)

    def _pipeline_for(self, scheduler: str) -> Any:
        """A pipeline object of this request's own: the loaded modules, a fresh scheduler."""
        components = dict(self.pipeline.components)
        components["scheduler"] = make_scheduler(scheduler, self.pipeline.scheduler.config)
        flags = {name: self.pipeline.config[name] for name in PIPELINE_FLAGS if name in self.pipeline.config}
        pipeline = type(self.pipeline)(**components, **flags)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def replace(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        reference: np.ndarray,
        generation: Generation,
        on_step: Callable[[float], None] | None = None,
        refine: bool = True,
    ) -> list[np.ndarray]:
        """One RGB uint8 image per seed: the background of `image` (the subject is where `mask` is 255)
        repainted, the subject's pixels pasted back. `on_step(fraction)` is called after each denoising
        step (it may raise to stop the request there). `refine=False` takes a cut-out's own alpha as it is."""
        if not self.ready:
            raise ServiceUnavailable(f"the {self.name} engine was not set up; call setup(device) first")
        import torch
        from PIL import Image

        rgb = np.ascontiguousarray(image[..., :3])
        height, width = rgb.shape[:2]
        if int(generation.num_inference_steps * generation.strength) < 1:
            # strength rounds to no step at all: the old background stays, as asked.
            if on_step is not None:
                on_step(1.0)
            return [rgb.copy() for _ in generation.seeds]
        work_height, work_width = working_size(height, width, self.resolution)
        work_image = _resize(rgb, work_width, work_height)
        work_mask = _resize(mask, work_width, work_height)
        control = subject_edges(work_image, work_mask)
        repaint = repaint_mask(work_mask)

        def after_step(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(min(1.0, (index + 1) / max(1, pipeline.num_timesteps)))
            return tensors

        with self._run_lock:
            # A request may have waited here for another: if it was cancelled meanwhile, it stops before any work.
            if on_step is not None:
                on_step(0.0)
            pipeline = self._pipeline_for(generation.scheduler)
            pipeline.set_ip_adapter_scale(generation.ip_adapter_weight)
            generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in generation.seeds]
            with torch.inference_mode():
                result = pipeline(
                    prompt=generation.prompt,
                    negative_prompt=generation.negative_prompt or None,
                    image=Image.fromarray(work_image),
                    mask_image=Image.fromarray(repaint),
                    control_image=Image.fromarray(control),
                    ip_adapter_image=Image.fromarray(adapter_reference(reference)),
                    height=work_height,
                    width=work_width,
                    strength=generation.strength,
                    num_inference_steps=generation.num_inference_steps,
                    guidance_scale=generation.guidance_scale,
                    controlnet_conditioning_scale=generation.cn_weight,
                    num_images_per_prompt=len(generation.seeds),
                    generator=generators,
                    output_type="np",
                    callback_on_step_end=after_step,
                )
        subject = cut_out(rgb, mask, refine)
        outputs = []
        for generated in result.images:
            pixels = np.clip(np.rint(np.asarray(generated, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
            outputs.append(lay_over(subject, _resize(pixels, width, height)))
        return outputs
