"""SFT-GAN training: the category prior network (`restore train sftgan-prior`) and the generator
in two stages (`restore train sftgan --stage 1|2`): the networks, the steps and validation; the
loop, checkpoints, exact resume, time limit, progress records and DDP are `train.run_loop`'s.
The configuration is in `train.sftgan_config`, the export in `train.sftgan_export`.

- sftgan-prior: the categories are derived from the training data (`ops.texture_categories`:
  k-means on texture and colour statistics of HR windows, seeded), stored in the prior network's
  buffers, and the network learns to predict them from the LR image: the per-pixel
  probabilities, averaged over each window's 8×8 LR footprint, are scored with the negative log
  likelihood of the window's category.
- sftgan stage 1: the generator alone with an L1 pixel loss (the PSNR-oriented start), conditioned
  on the frozen prior network's predictions from the LR patch (what inference will feed it).
- sftgan stage 2 (ANCHORS 5.4): adversarial training against a VGG-style discriminator with a
  real/fake head and a category head (cross-entropy on patch categories, mixed patches ignored);
  the generator gets the vanilla GAN loss (5e-3), the category loss (5e-3), a perceptual term and
  a small L1 pixel term (1e-2). SFT and condition-network layers learn at 5× the learning rate;
  the rest of the generator waits `trunk_warmup` steps (the reference's 20k of 600k).
  Perceptual term: discriminator feature matching (L1 between the four stage outputs of the
  discriminator, in eval mode, for the output and the HR patch). The reference's VGG19 features
  are a downloaded ImageNet network, which this project does not use; the discriminator is
  trained here, on these images, and is always available, whereas the project's denoiser is a
  separate optional model whose features were trained for noise removal, not for texture.

One Adam optimizer holds every trainable group (generator trunk, SFT/condition layers,
discriminator); in each half-step only the parameters being trained have gradients (the others
are set to None), so Adam leaves them alone and the checkpoint code saves one optimizer.
"""


from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from restore_cli.errors import RestoreError
from restore_cli.models.sft import SCALE, CategoryDiscriminator, CategoryPriorNet, SFTGenerator, upsample_prior
from restore_cli.models.sftgan_architectures import combined_config, read_prior_config, split_sftgan_config
from restore_cli.ops.colour import rgb_to_y
from restore_cli.ops.metrics import crop_border, psnr, quantize_to_uint8_levels
from restore_cli.ops.texture_categories import WINDOW, fit_texture_clusters, window_features
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.data import ImageSet, load_image_set
from restore_cli.train.progress import TrainingObserver, TrainResult
from restore_cli.train.run_loop import TrainingRun, built_with_seed, train_in_process_group
from restore_cli.train.sftgan_config import FAMILY, SftganTrainConfig, resume_mismatches
from restore_cli.train.sftgan_data import (
    IGNORE,
    GanBatch,
    PriorBatch,
    clusters_of,
    gan_batch,
    lr_from_hr,
    pooled_window_probabilities,
    prior_batch,
    sample_cluster_windows,
    store_clusters,
    validation_crop,
    window_grids,
)
from restore_cli.train.sftgan_export import category_descriptions, started_from

VAL_BORDER = SCALE
LSD_BAND = (0.25, 0.5)
CLUSTER_SEED_STREAM = 2  # the clustering draws come from default_rng([seed, CLUSTER_SEED_STREAM])


# --- weights sources ------------------------------------------------------------------------------


def read_weights_source(path: Path) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """(arch, config, tensors) of an SFT-GAN family `.safetensors` file, checkpoint or run folder;
    a training checkpoint's discriminator tensors are left out."""
    from restore_cli.engine.weights import read_safetensors
    from restore_cli.models.architectures import get_architecture

    path = Path(path)
    if path.suffix.lower() == ".safetensors" or path.is_file():
        tensors, metadata = read_safetensors(path)
        arch = metadata.get("arch")
        if arch not in ("sftgan", "sftgan-prior", "sftgan-generator"):
            raise RestoreError(f"expected SFT-GAN weights (sftgan or sftgan-prior), this file holds {arch or 'no arch metadata'}", path)
        try:
            config = json.loads(metadata["config"]) if "config" in metadata else get_architecture(arch).infer_config(tensors)
        except ValueError as exc:
            raise RestoreError(f"weights do not fit {arch} ({exc})", path) from None
        return arch, config, tensors
    checkpoint = ckpt.resolve_checkpoint(path)
    state = ckpt.read_checkpoint_state(checkpoint)
    if state.get("family") != FAMILY:
        raise RestoreError(f"not an SFT-GAN training checkpoint (task {state.get('task')!r})", checkpoint)
    tensors = {k: v for k, v in ckpt.read_model_tensors(checkpoint).items() if not k.startswith("discriminator.")}
    return state["arch"], state["model_config"], tensors


def _sub_state(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_prior_network(path: Path) -> CategoryPriorNet:
    """A trained prior network from an sftgan-prior (or sftgan) weights file, checkpoint or run."""
    arch, config, tensors = read_weights_source(path)
    if arch == "sftgan":
        tensors = _sub_state(tensors, "prior.")
        config = split_sftgan_config(config)[1]
    elif arch != "sftgan-prior":
        raise RestoreError(f"--prior-model needs sftgan-prior weights, this holds {arch}", path)
    net = CategoryPriorNet(**config)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise RestoreError(f"prior weights do not fit {config} ({str(exc).splitlines()[0]})", path) from None
    return net


def load_sftgan_init(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], CategoryPriorNet]:
    """(generator config, generator tensors, prior network) of an sftgan run, checkpoint or file."""
    arch, config, tensors = read_weights_source(path)
    if arch != "sftgan":
        raise RestoreError(f"--init needs an sftgan model (generator and prior), this holds {arch}", path)
    generator_config, prior_config = split_sftgan_config(config)
    prior = CategoryPriorNet(**prior_config)
    try:
        prior.load_state_dict(_sub_state(tensors, "prior."), strict=True)
    except RuntimeError as exc:
        raise RestoreError(f"prior weights do not fit {prior_config} ({str(exc).splitlines()[0]})", path) from None
    return generator_config, _sub_state(tensors, "generator."), prior


def _is_sft_parameter(name: str) -> bool:
    """SFT and condition-network parameters (5× learning rate in stage 2)."""
    return "SFT_" in name or name.startswith("CondNet.")



# --- the runs -------------------------------------------------------------------------------------


class _SftganRun(TrainingRun):
    """What the prior and generator runs share (the loop is `TrainingRun`'s): RGB training images,
    SFT-GAN checkpoints, one Adam over `param_groups`, `train` records with every loss term."""

    config: SftganTrainConfig
    loss_noun = "a loss"
    logs_loss_terms = True

    def _build_networks(self, checkpoint: ckpt.Checkpoint | None) -> None:
        """Set `model` (the modules a checkpoint holds), `model_config`, `param_groups`, `base_lrs`."""
        raise NotImplementedError

    def _check_checkpoint_kind(self, checkpoint: ckpt.Checkpoint) -> None:
        if checkpoint.state.get("family") != FAMILY:
            raise RestoreError(f"not an SFT-GAN checkpoint (task {checkpoint.state.get('task')!r})", checkpoint.path)

    def _load_data(self) -> None:
        self.images: ImageSet = load_image_set(self.config.data, 3, min_size=self.config.patch)
        self.data_fingerprint = self.images.fingerprint()

    def _config_mismatches(self, stored: SftganTrainConfig) -> list[str]:
        return resume_mismatches(stored, self.config)

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        self._build_networks(checkpoint)
        self.optimizer = torch.optim.Adam(self.param_groups, betas=(0.9, 0.999), weight_decay=0.0)

    def _load_validation(self) -> None:
        cfg = self.config
        self.val_images: list[Tensor] = []
        if cfg.val is not None and self.context.is_main:
            val_set = load_image_set([cfg.val], 3, min_size=WINDOW)
            self.val_images = [validation_crop(image, cfg.val_max_size) for image in val_set.images]

    def _state_identity(self) -> dict[str, Any]:
        cfg = self.config
        return {"family": FAMILY, "config": cfg.to_json(), "arch": cfg.arch, "model_config": self.model_config,
                "task": cfg.task, "stage": cfg.stage}

    def _start_fields(self) -> dict[str, Any]:
        return {"task": self.config.task, "stage": self.config.stage, **super()._start_fields()}

    def _model_config(self) -> dict[str, Any]:
        return self.model_config

    def _task_label(self) -> str:
        return self.config.task if self.config.task == "sftgan-prior" else f"sftgan stage {self.config.stage}"

    def _parameter_count(self) -> int:
        return sum(p.numel() for group in self.param_groups for p in group["params"])


class _PriorRun(_SftganRun):
    """Clustering, then the prior network trained to predict the window categories from LR."""

    def _build_networks(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        config = dict(checkpoint.state["model_config"]) if checkpoint is not None else cfg.prior_config()
        self.model_config = config
        net: CategoryPriorNet = built_with_seed(cfg.seed, lambda: CategoryPriorNet(**config))
        if checkpoint is None:
            rng = np.random.default_rng([cfg.seed, CLUSTER_SEED_STREAM])
            if min(min(image.shape[:2]) for image in self.images.images) < WINDOW:
                raise RestoreError(f"every training image must be at least {WINDOW}×{WINDOW}")
            features = window_features(sample_cluster_windows(self.images, cfg.cluster_samples, rng))
            store_clusters(net, fit_texture_clusters(features, cfg.categories, rng))
        self.net = net.to(self.device, memory_format=self.memory_format)
        self.model = self.net
        self.param_groups = [{"params": list(self.net.parameters()), "lr": cfg.lr, "name": "prior"}]
        self.base_lrs = [float(cfg.lr)]  # type: ignore[list-item]

    def _finish_setup(self) -> None:
        self.clusters = clusters_of(self.net)
        self._write_log({"kind": "categories", "step": self.step, "descriptions": category_descriptions(self.net)})
        self.val_labels = [torch.from_numpy(window_grids(image, self.clusters)[0]) for image in self.val_images]
        self.forward_net = self._distributed(self.net)

    def _make_batch(self) -> PriorBatch:
        return prior_batch(self.images, self.config.batch, self.config.patch, self.rng, self.clusters)

    def _step(self, cpu_batch: PriorBatch) -> dict[str, float]:
        batch = cpu_batch.to(self.device, self.memory_format)
        with self.placement.autocast():
            logits = self.forward_net(batch.lr)
        pooled = pooled_window_probabilities(torch.softmax(logits.float(), dim=1))
        loss = F.nll_loss(torch.log(pooled.clamp_min(1e-8)), batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        self._optimizer_step()
        accuracy = (pooled.argmax(dim=1) == batch.labels).float().mean()
        return {"loss": float(loss.detach()), "accuracy": float(accuracy)}

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        self.net.eval()
        correct = total = 0
        nll = 0.0
        for hr, labels in zip(self.val_images, self.val_labels):
            pooled = pooled_window_probabilities(self.net.probabilities(lr_from_hr(hr).to(self.device)).float()).cpu()
            correct += int((pooled.argmax(dim=1)[0] == labels).sum())
            total += labels.numel()
            nll += float(F.nll_loss(torch.log(pooled.clamp_min(1e-8)), labels[None], reduction="sum"))
        self.net.train()
        return {"accuracy": correct / max(total, 1), "nll": nll / max(total, 1),
                "protocol": f"window categories ({WINDOW}×{WINDOW} HR, stride 16) of centre crops <= {self.config.val_max_size}"}


class _GanRun(_SftganRun):
    """Stage 1 (pixel loss) or stage 2 (adversarial, category-aware discriminator)."""

    def _build_networks(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        if checkpoint is not None:
            generator_config, prior_config = split_sftgan_config(checkpoint.state["model_config"])
            prior = CategoryPriorNet(**prior_config)
            init_tensors: dict[str, Tensor] | None = None
        elif cfg.init is not None:
            generator_config, init_tensors, prior = load_sftgan_init(cfg.init)
            wanted = cfg.generator_config(generator_config["categories"])
            if cfg.arch_config and wanted != generator_config:
                raise RestoreError(f"--arch-config {cfg.arch_options()} does not match the --init generator {generator_config}", cfg.init)
        else:
            assert cfg.prior_model is not None
            prior = load_prior_network(cfg.prior_model)
            generator_config = cfg.generator_config(prior.categories)
            init_tensors = None
        if checkpoint is None:
            self.init_record = started_from(cfg)
        generator: SFTGenerator = built_with_seed(cfg.seed, lambda: SFTGenerator(**generator_config))
        if init_tensors is not None:
            generator.load_state_dict(init_tensors, strict=True)
        self.model_config = combined_config(generator_config, read_prior_config(prior.state_dict()))
        modules: dict[str, nn.Module] = {"generator": generator, "prior": prior}
        if cfg.stage == 2:
            modules["discriminator"] = built_with_seed(cfg.seed + 1, lambda: CategoryDiscriminator(
                generator_config["in_nc"], generator_config["categories"], cfg.d_nf, cfg.patch))
        self.model = nn.ModuleDict(modules).to(self.device, memory_format=self.memory_format)
        self.gen: SFTGenerator = self.model["generator"]  # type: ignore[assignment]
        self.prior: CategoryPriorNet = self.model["prior"]  # type: ignore[assignment]
        self.prior.eval().requires_grad_(False)
        self.disc: CategoryDiscriminator | None = self.model["discriminator"] if cfg.stage == 2 else None  # type: ignore[assignment]
        assert cfg.lr is not None and cfg.d_lr is not None
        if cfg.stage == 1:
            self.param_groups = [{"params": list(self.gen.parameters()), "lr": cfg.lr, "name": "generator"}]
            self.base_lrs = [cfg.lr]
        else:
            assert self.disc is not None
            named = list(self.gen.named_parameters())
            self.trunk = [p for n, p in named if not _is_sft_parameter(n)]
            sft = [p for n, p in named if _is_sft_parameter(n)]
            self.param_groups = [
                {"params": self.trunk, "lr": cfg.lr, "name": "generator-trunk"},
                {"params": sft, "lr": cfg.lr * cfg.sft_lr_factor, "name": "generator-sft"},
                {"params": list(self.disc.parameters()), "lr": cfg.d_lr, "name": "discriminator"},
            ]
            self.base_lrs = [cfg.lr, cfg.lr * cfg.sft_lr_factor, cfg.d_lr]

    def _finish_setup(self) -> None:
        self.clusters = clusters_of(self.prior) if self.config.stage == 2 else None
        self.gen_forward = self._distributed(self.gen)
        self.disc_forward = None if self.disc is None else self._distributed(self.disc)

    def _make_batch(self) -> GanBatch:
        return gan_batch(self.images, self.config.batch, self.config.patch, self.rng, self.clusters)

    def _condition(self, lr: Tensor) -> Tensor:
        with torch.no_grad():
            return upsample_prior(self.prior.probabilities(lr).float())

    def _step(self, cpu_batch: GanBatch) -> dict[str, float]:
        batch = cpu_batch.to(self.device, self.memory_format)
        if self.config.stage == 1:
            return self._pixel_step(batch)
        return self._adversarial_step(batch)

    def _pixel_step(self, batch: GanBatch) -> dict[str, float]:
        prior = self._condition(batch.lr)
        with self.placement.autocast():
            output = self.gen_forward(batch.lr, prior)
        loss = F.l1_loss(output.float(), batch.hr)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        self._optimizer_step()
        return {"loss": float(loss.detach())}

    def _adversarial_step(self, batch: GanBatch) -> dict[str, float]:
        cfg = self.config
        disc, disc_forward = self.disc, self.disc_forward
        assert disc is not None and disc_forward is not None
        labelled = bool((batch.category != IGNORE).any())
        if self.context.enabled:
            # BatchNorm statistics move with each process's batches; start every step from rank 0's
            # (which the checkpoint saves), so that a resumed run repeats an uninterrupted one.
            import torch.distributed as dist

            for buffer in disc.buffers():
                dist.broadcast(buffer, 0)
        prior = self._condition(batch.lr)
        ones = torch.ones(batch.hr.shape[0], device=self.device)
        zeros = torch.zeros_like(ones)

        # Generator half-step: the discriminator's weights take no gradient.
        disc.requires_grad_(False)
        with self.placement.autocast():
            fake = self.gen_forward(batch.lr, prior)
            fake_logit, fake_category = disc(fake)
        fake32 = fake.float()
        pixel = F.l1_loss(fake32, batch.hr)
        gan = F.binary_cross_entropy_with_logits(fake_logit.float(), ones)
        category = F.cross_entropy(fake_category.float(), batch.category, ignore_index=IGNORE) if labelled else fake32.new_zeros(())
        disc.eval()  # feature matching on running statistics: batch statistics would hide shifts
        with self.placement.autocast():
            with torch.no_grad():
                real_features = disc.features(batch.hr)
            fake_features = disc.features(fake)
        disc.train()
        matching = sum(F.l1_loss(f.float(), r.float()) for f, r in zip(fake_features, real_features)) / len(real_features)
        g_loss = cfg.pixel_weight * pixel + cfg.feature_weight * matching + cfg.gan_weight * gan + cfg.category_weight * category
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(g_loss)
        disc.requires_grad_(True)
        if self.step < cfg.warmup_steps():
            for p in self.trunk:  # the reference updates only SFT/condition layers at first
                p.grad = None
        self._optimizer_step()

        # Discriminator half-step: real and fake each with their own backward (DDP-friendly).
        self.optimizer.zero_grad(set_to_none=True)
        with self.placement.autocast():
            real_logit, real_category = disc_forward(batch.hr)
        d_real = F.binary_cross_entropy_with_logits(real_logit.float(), ones)
        d_category = F.cross_entropy(real_category.float(), batch.category, ignore_index=IGNORE) if labelled else real_logit.new_zeros(())
        self._backward(d_real + cfg.d_category_weight * d_category)
        with self.placement.autocast():
            fake_logit_d, fake_category_d = disc_forward(fake.detach())
        # The category head is not trained on fakes; its zero-weighted term keeps every parameter in
        # the graph, which DDP requires.
        d_fake = F.binary_cross_entropy_with_logits(fake_logit_d.float(), zeros) + 0.0 * fake_category_d.float().sum()
        self._backward(d_fake)
        self._optimizer_step()
        return {"loss": float(g_loss.detach()), "pixel": float(pixel.detach()), "feature": float(matching.detach()),
                "gan": float(gan.detach()), "category": float(category.detach()), "d_real": float(d_real.detach()),
                "d_fake": float(d_fake.detach()), "d_category": float(d_category.detach())}

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        from restore_cli.ops.spectrum import image_log_spectral_distance

        self.gen.eval()
        psnrs, lsds = [], []
        for hr in self.val_images:
            lr = lr_from_hr(hr).to(self.device)
            output = self.gen(lr, self._condition(lr)).float().cpu()
            out_y = rgb_to_y(quantize_to_uint8_levels(output[0]) / 255.0) * 255.0
            ref_y = rgb_to_y(quantize_to_uint8_levels(hr[0]) / 255.0) * 255.0
            psnrs.append(psnr(out_y, ref_y, border=VAL_BORDER))
            a, b = crop_border(out_y[0], VAL_BORDER).numpy(), crop_border(ref_y[0], VAL_BORDER).numpy()
            lsds.append(image_log_spectral_distance(a, b, LSD_BAND))
        self.gen.train()
        return {"psnr": float(np.mean(psnrs)), "lsd_high": float(np.mean(lsds)),
                "protocol": f"x{SCALE} MATLAB bicubic LR (8-bit), Y, border {VAL_BORDER}; LSD over {LSD_BAND[0]}–{LSD_BAND[1]} "
                            f"cycles/pixel; centre crops <= {self.config.val_max_size}"}


def run_sftgan_training(config: SftganTrainConfig, observer: TrainingObserver | None = None) -> TrainResult:
    """Train as `config` says (fresh or from `config.resume`); under torchrun every process trains
    on its own patches and DDP keeps the weights identical; rank 0 writes checkpoints and the log."""
    return train_in_process_group(_PriorRun if config.task == "sftgan-prior" else _GanRun, config, observer)
