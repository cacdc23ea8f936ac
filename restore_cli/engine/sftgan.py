"""Running SFT-GAN: the category prior (estimated, read from a file, or forced) and ×4 texture SR,
both through the tiled runner (`engine.tiling.run_with_oom_backoff`).

The prior travels with the image through the tiles: LR-size maps are concatenated to the LR
image as K extra channels and upsampled to HR inside each tile (bilinear, `models.sft.upsample_prior`);
HR-size maps (from a file) are folded to LR size by pixel-unshuffle (16·K channels) and unfolded in
the tile. Whole-image and tiled runs go through the same padding, so with a context at least the
networks' reach they agree to float precision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from restore_cli.engine.device import Placement, available_memory_bytes, select_device, select_precision
from restore_cli.engine.registry import ResolvedModel, find_entry, load_entry, load_weights_file
from restore_cli.engine.restore import TileRequest
from restore_cli.engine.tiling import TileSettings, auto_tile_size, run_with_oom_backoff
from restore_cli.engine.units import image_to_tensor, tensor_to_image
from restore_cli.errors import RestoreError
from restore_cli.io.images import ImageData, resize_alpha
from restore_cli.io.prior_files import PriorMaps, find_prior_in_folder, read_prior_file
from restore_cli.models.sft import SCALE, CategoryPriorNet, SFTGenerator, upsample_prior
from restore_cli.models.sftgan_architectures import TEXTURE_TASK

# Context (LR pixels) around each tile. The prior network reaches exactly its receptive radius
# (19 pixels for nb = 6), so its tiles are exact. The generator's 34 3×3 convolutions at LR size
# reach 34 pixels in principle; with random full-size weights a context of 8 already matched the
# whole-image run to 126 dB; 24 leaves a margin for trained weights, whose influence reaches farther.
PRIOR_CONTEXT_MARGIN = 4
GENERATOR_CONTEXT = 24
# Peak activations per HR output pixel (fp32): the HR branch holds two 64-channel maps at HR size
# and a 256-channel map at half size, about 200 floats.
GENERATOR_BYTES_PER_PIXEL = 1024.0

PriorKind = Literal["auto", "file", "folder", "category", "uniform"]


@dataclass(frozen=True)
class PriorRequest:
    """Where the category prior comes from: the prior network (auto), a file, a folder of files
    named like the inputs, one category forced everywhere, or equal probabilities."""

    kind: PriorKind = "auto"
    path: Path | None = None
    category: int | None = None
    classes: Path | None = None

    def describe(self) -> str:
        if self.kind == "category":
            return f"category:{self.category}"
        if self.kind in ("file", "folder"):
            return str(self.path)
        return self.kind


def texture_architecture(name: str | None, weights: Path | None) -> str | None:
    """The architecture of the chosen model when it is an SFT-GAN one (task TEXTURE_TASK), else None.
    No choice at all means the default SR model (USRNet): None."""
    from restore_cli.models.architectures import ARCHITECTURES

    if weights is not None:
        if not Path(weights).is_file() or Path(weights).suffix.lower() != ".safetensors":
            return None  # the USRNet path reports the problem
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt", device="cpu") as handle:
                arch = (handle.metadata() or {}).get("arch")
        except (SafetensorError, OSError, ValueError):
            return None
    elif name is not None:
        arch = find_entry(name).arch
    else:
        return None
    if arch in ARCHITECTURES and ARCHITECTURES[arch].task == TEXTURE_TASK:
        return arch
    return None


def _model_parts(model: ResolvedModel) -> tuple[SFTGenerator, CategoryPriorNet | None]:
    module = model.module
    if model.arch == "sftgan":
        return module.generator, module.prior  # type: ignore[return-value]
    if model.arch == "sftgan-generator":
        return module, None  # type: ignore[return-value]
    if model.arch == "sftgan-prior":
        raise RestoreError(f"model '{model.name}' is a category prior network only; it runs inside an sftgan model "
                           "(restore train sftgan --prior-model …)")
    raise RestoreError(f"model '{model.name}' ({model.arch}) is not an SFT-GAN model")


class TextureSuperResolver:
    """An SFT-GAN model placed on its device: `estimate_prior` and `super_resolve` on 1×3×h×w
    float tensors in [0, 1] (CPU in, CPU float32 out)."""

    def __init__(self, model: ResolvedModel, placement: Placement, tiles: TileRequest = TileRequest(),
                 log: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.placement = placement
        self.tiles = tiles
        self.log = log or (lambda message: None)
        generator, prior_net = _model_parts(model)
        self.generator = generator.to(placement.device).eval().to(memory_format=torch.channels_last)
        self.prior_net = None if prior_net is None else prior_net.to(placement.device).eval()
        self.categories = generator.categories

    @property
    def has_prior_net(self) -> bool:
        return self.prior_net is not None

    def _settings(self, x: Tensor, scale: int, context: int, bytes_per_pixel: float) -> TileSettings:
        tile = self.tiles.tile
        if tile is None:
            element = 2 if self.placement.precision in ("bf16", "fp16") else 4
            free = available_memory_bytes(self.placement.device)
            tile = auto_tile_size(free, bytes_per_pixel * element / 4, scale, context)
        whole = tile <= 0 or tile >= max(x.shape[-2:])
        return TileSettings(tile=0 if whole else tile, overlap=self.tiles.overlap, context=context, pad_mode="reflect", multiple=1)

    def _run(self, x: Tensor, forward: Callable[[Tensor], Tensor], scale: int, context: int, bytes_per_pixel: float) -> Tensor:
        placement = self.placement

        def fn(region: Tensor) -> Tensor:
            region = region.to(placement.device, torch.float32).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), placement.autocast():
                out = forward(region)
            return out.float()

        settings = self._settings(x, scale, context, bytes_per_pixel)
        self.log(f"tiles: {settings.tile or 'off'} (overlap {settings.overlap}, context {settings.context}, reflect)")
        y, _ = run_with_oom_backoff(
            x, fn, scale, settings,
            on_retry=lambda old, new: self.log(f"out of memory with {old}-pixel tiles; retrying with {new}"),
        )
        return y

    def estimate_prior(self, lr: Tensor) -> Tensor:
        """Category probabilities 1×K×h×w predicted from the LR image 1×3×h×w."""
        if self.prior_net is None:
            raise RestoreError(f"model '{self.model.name}' has no prior network; give --prior FILE (or category:N)")
        net = self.prior_net
        context = net.receptive_radius + PRIOR_CONTEXT_MARGIN
        return self._run(lr, net.probabilities, scale=1, context=context, bytes_per_pixel=16.0 * net.nf)

    def super_resolve(self, lr: Tensor, prior: Tensor) -> Tensor:
        """×4 SR of 1×3×h×w guided by category maps 1×K×h×w (LR size) or 1×K×4h×4w (HR size)."""
        _, _, h, w = lr.shape
        k = self.categories
        if prior.shape[1] != k:
            raise RestoreError(f"the prior has {prior.shape[1]} categories, the model {k}")
        if tuple(prior.shape[-2:]) == (h, w):
            carried = prior
            unfold: Callable[[Tensor], Tensor] = upsample_prior
        elif tuple(prior.shape[-2:]) == (SCALE * h, SCALE * w):
            carried = F.pixel_unshuffle(prior, SCALE)  # 1×16K×h×w
            unfold = lambda folded: F.pixel_shuffle(folded, SCALE)  # noqa: E731
        else:
            raise RestoreError(f"the prior is {tuple(prior.shape[-2:])}, the input {h}×{w} (LR) or {SCALE * h}×{SCALE * w} (HR)")
        x = torch.cat((lr.to(torch.float32), carried.to(torch.float32)), dim=1)
        generator = self.generator
        channels = lr.shape[1]

        def forward(region: Tensor) -> Tensor:
            image, maps = region[:, :channels], region[:, channels:]
            return generator(image.contiguous(memory_format=torch.channels_last), unfold(maps).contiguous())

        return self._run(x, forward, scale=SCALE, context=GENERATOR_CONTEXT, bytes_per_pixel=GENERATOR_BYTES_PER_PIXEL)


def open_texture_resolver(name: str | None, weights: Path | None, device: str = "auto", precision: str = "auto",
                          tiles: TileRequest = TileRequest(), log: Callable[[str], None] | None = None) -> TextureSuperResolver:
    """Load the chosen SFT-GAN model (manifest name or weights file) and place it."""
    from restore_cli.engine.session import model_bf16_loss

    if weights is not None:
        model = load_weights_file(Path(weights), TEXTURE_TASK)
    elif name is not None:
        model = load_entry(find_entry(name))
    else:
        raise RestoreError("choose an SFT-GAN model with --model NAME or --weights FILE")
    target = select_device(device)
    placement = select_precision(precision, target, model_bf16_loss(model))  # type: ignore[arg-type]
    if log is not None:
        log(f"model {model.name} ({model.arch}) on {placement.describe()}")
    return TextureSuperResolver(model, placement, tiles, log)


def forced_prior(categories: int, size: tuple[int, int], category: int | None) -> Tensor:
    """LR-size maps 1×K×h×w: one-hot on `category`, or uniform when it is None."""
    if category is not None and not 0 <= category < categories:
        raise RestoreError(f"category {category} is out of range: the model has categories 0–{categories - 1}")
    maps = torch.full((1, categories, *size), 1.0 / categories) if category is None else torch.zeros(1, categories, *size)
    if category is not None:
        maps[:, category] = 1.0
    return maps


def resolve_prior(resolver: TextureSuperResolver, request: PriorRequest, lr: Tensor,
                  source: Path | None = None) -> tuple[Tensor, str]:
    """The category maps for one LR image 1×3×h×w as asked (1×K×h×w or 1×K×4h×4w probabilities)
    and where they came from."""
    size = (int(lr.shape[-2]), int(lr.shape[-1]))
    k = resolver.categories
    if request.kind == "auto":
        return resolver.estimate_prior(lr), "auto"
    if request.kind in ("uniform", "category"):
        return forced_prior(k, size, request.category if request.kind == "category" else None), request.describe()
    if request.path is None:
        raise RestoreError(f"--prior {request.kind} needs a path")
    path = request.path if request.kind == "file" else find_prior_in_folder(request.path, Path(source or "input").stem)
    maps: PriorMaps = read_prior_file(path, k, size, SCALE, request.classes)
    return torch.from_numpy(maps.probabilities).unsqueeze(0), str(path)


def category_shares(prior: Tensor) -> list[float]:
    """Mean probability of each category over the image (rounded, for reports): the share of the
    image each category claims, soft maps included."""
    return [round(float(v), 4) for v in prior[0].double().mean(dim=(1, 2))]


def super_resolve_texture(resolver: TextureSuperResolver, x: Tensor, request: PriorRequest,
                          source: Path | None = None) -> tuple[Tensor, Tensor, str]:
    """×4 SFT-GAN on a 1×C×h×w tensor in [0, 1]: gray runs as three equal channels and comes back
    as their mean. Returns the output, the prior used and where it came from."""
    channels = x.shape[1]
    if channels == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    elif channels != 3:
        raise RestoreError(f"SFT-GAN takes RGB or gray images, this one has {channels} channels", source)
    prior, origin = resolve_prior(resolver, request, x, source)
    y = resolver.super_resolve(x, prior)
    return (y.mean(dim=1, keepdim=True) if channels == 1 else y), prior, origin


def super_resolve_texture_image(resolver: TextureSuperResolver, image: ImageData, request: PriorRequest,
                                source: Path | None = None) -> tuple[ImageData, dict[str, Any], np.ndarray]:
    """×4 SFT-GAN on one image (`super_resolve_texture`), alpha resized with it. Returns the
    result, report details and the prior used (K×H×W float32, for --save-prior)."""
    y, prior, origin = super_resolve_texture(resolver, image_to_tensor(image.pixels), request, source)
    pixels = tensor_to_image(y)
    alpha = image.alpha
    if alpha is not None and alpha.shape != pixels.shape[:2]:
        alpha = resize_alpha(alpha, (pixels.shape[0], pixels.shape[1]))
    details = {
        "model": resolver.model.name,
        "device": str(resolver.placement.device),
        "precision": resolver.placement.precision,
        "scale": SCALE,
        "prior": origin,
        "category_shares": category_shares(prior),
    }
    return replace(image, pixels=pixels, alpha=alpha), details, prior[0].numpy()
