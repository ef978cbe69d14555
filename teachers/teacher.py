"""The frozen teacher: a diffusers denoiser plus the noise schedule it was trained with."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from students import DIFFUSERS_CLASSES
from students.common import (
    BUILTIN_PREFIX,
    builtin_folder,
    builtin_name,
    check_finite_weights,
    list_builtins,
    named_tensors,
    read_json,
    weights_source,
)
from teachers.conditioning import Cond, expand_cond, is_text
from teachers.network import denoise, num_class_embeds
from teachers.parameterization import Prediction
from teachers.schedule import schedule_from_config
from teachers.transformer import (
    DEFAULT_T5_TOKENS,
    FLUX_DEFAULT_SAMPLE_SIZE,
    POOLED_KEY,
    latent_channels,
    patch_size,
    transformer_family,
)

# diffusers classes a teacher folder may name; loading never imports code from the folder itself.
SUPPORTED_CLASSES = DIFFUSERS_CLASSES
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
BUILTIN_TEACHERS = {name: builtin_folder(name, kind="teacher") for name in list_builtins("teacher")}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}")
    return _DTYPES[dtype]


class DiffusionTeacher(nn.Module):
    """A frozen diffusion teacher answering ``predict(x_t, t, cond, guidance_scale)`` in x0, eps and v.

    Frozen at construction (``eval()``, ``requires_grad_(False)``) and optionally held in bf16/fp16; its math
    (conversions, guidance) runs in the input's dtype. Methods register it as ``self.teacher`` and keep it out
    of optimizers, DDP and checkpoints.

    Args:
        unet: the denoiser: a diffusers ``UNet2DModel`` / ``UNet2DConditionModel``, an ``SD3Transformer2DModel`` or a
            ``FluxTransformer2DModel`` (called as its pipeline calls it, :mod:`teachers.transformer`), or anything
            with the UNet call signature.
        scheduler_config: the diffusers scheduler config it was trained with (``scheduler_config.json``).
        dtype: dtype the network is held and run in.
        null_class: the class label of the unconditional branch for class-conditional teachers
            (default: the last class embedding, as the digits teacher is trained).
        vae: a latent teacher's autoencoder (``AutoencoderKL``); images are encoded to
            ``(mean - shift_factor) * scaling_factor`` and decoded back.
        text_encoders, tokenizers: a text-conditioned teacher's encoder/tokenizer pairs (one for SD 1.x/2.x, two
            for SDXL, whose hidden states are concatenated and whose second encoder gives the pooled embedding).
        vae_dtype: dtype of the VAE and text encoders (fp32 by default even when the UNet is half precision).
        shift: the flow-matching shift this run expects (None: the scheduler config's, which is always what is
            used). Given, it must equal the config's: a run never silently samples or trains at another shift.
        sample_size: the latent size the teacher generates (None: the network config's ``sample_size``; FLUX's
            config has none, so FluxPipeline's default 128, i.e. 1024 px).
        max_sequence_length: T5 tokens per prompt for SD3 / FLUX teachers (None: their pipelines' defaults, 256
            and 512); a stock pipeline reproduces the library's samples when called with the same value.

    The schedule family comes from ``scheduler_config``: a discrete (DDPM-family) ``NoiseSchedule`` or, for
    ``FlowMatchEulerDiscreteScheduler`` (SD3, FLUX) and ``use_flow_sigmas`` solvers (SANA), a ``FlowSchedule``.
    """

    def __init__(
        self,
        unet: nn.Module,
        scheduler_config: Mapping[str, Any],
        *,
        dtype: str | torch.dtype | None = None,
        null_class: int | None = None,
        vae: nn.Module | None = None,
        text_encoders: list[nn.Module] | None = None,
        tokenizers: list[Any] | None = None,
        vae_dtype: str | torch.dtype | None = None,
        shift: float | None = None,
        sample_size: int | None = None,
        max_sequence_length: int | None = None,
    ) -> None:
        super().__init__()
        text_encoders, tokenizers = list(text_encoders or []), list(tokenizers or [])
        if len(text_encoders) != len(tokenizers):
            raise ValueError(
                f"{len(text_encoders)} text encoders but {len(tokenizers)} tokenizers: pass one per encoder"
            )
        side = resolve_dtype(vae_dtype)

        def held(module: nn.Module) -> nn.Module:
            return module if next(module.parameters()).dtype == side else module.to(side)

        self.vae = None if vae is None else held(vae)
        self.text_encoders = nn.ModuleList([held(e) for e in text_encoders])
        self.tokenizers = tokenizers
        self._uncond: Cond = None
        target = resolve_dtype(dtype)
        current = next(unet.parameters()).dtype
        self.unet = unet if current == target else unet.to(target)
        self.transformer_family = transformer_family(unet)
        self._sample_size = check_sample_size(unet, sample_size)
        if max_sequence_length is not None and (
            isinstance(max_sequence_length, bool) or max_sequence_length < 1
        ):
            raise ValueError(
                f"max_sequence_length must be a positive number of T5 tokens, got {max_sequence_length}"
            )
        self.max_sequence_length = (
            None
            if self.transformer_family is None
            else int(max_sequence_length or DEFAULT_T5_TOKENS[self.transformer_family])
        )
        schedule = schedule_from_config(scheduler_config)
        check_shift(schedule, shift)
        if self.transformer_family is not None and schedule.family != "flow":
            raise ValueError(
                f"a {type(unet).__name__} is a flow-matching model, but its scheduler config is a discrete "
                f"{scheduler_config.get('_class_name')}: point at the pipeline's own scheduler/ "
                "(FlowMatchEulerDiscreteScheduler)"
            )
        if self.transformer_family == "flux":  # FluxPipeline samples on its own sigmas: linspace(1, 1/N, N)
            schedule = schedule.with_sigma_grid("flux")
        if getattr(schedule, "use_dynamic_shifting", False):
            schedule = schedule.with_image_seq_len(image_tokens(self.unet, self._sample_size))
        self.schedule = schedule
        n_classes = num_class_embeds(unet)
        self.null_class = null_class if null_class is not None else (n_classes - 1 if n_classes else None)
        self.source: str | None = None
        self.weights_dir: Path | None = None  # the denoiser's folder, when loaded from one (its fingerprint)
        self.requires_grad_(False)
        self.eval()

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        subfolder: str | None = None,
        dtype: str | torch.dtype | None = None,
        null_class: int | None = None,
        latent_parts: bool = True,
        vae_dtype: str | torch.dtype | None = None,
        shift: float | None = None,
        sample_size: int | None = None,
        max_sequence_length: int | None = None,
    ) -> DiffusionTeacher:
        """Load from a diffusers pipeline folder (``unet/`` + ``scheduler/``) or a model folder.

        ``path`` is a local folder, ``builtin:digits`` for the teacher shipped with this package (or
        ``builtin:NAME`` of a shipped student, e.g. to distil it into its int8 copy), or a Hugging Face id already
        in the local cache (never downloaded). A model folder needs its scheduler config beside
        it (``scheduler_config.json``) or in a sibling ``scheduler/`` folder. A Stable-Diffusion-style pipeline
        folder also gives the teacher its ``vae/``, ``text_encoder/`` (+ ``_2``) and ``tokenizer/`` (+ ``_2``)
        unless ``latent_parts`` is false (e.g. when training from precomputed latents and embeddings, which
        carry the empty-prompt embedding themselves). ``shift``: see the class (a flow teacher's shift check).
        An SD3 or FLUX pipeline folder has ``transformer/`` instead of ``unet/`` and its text encoders (CLIP, and
        T5 where present: ``text_encoder_3`` of SD3 is optional); ``sample_size`` and ``max_sequence_length``: see
        the class.
        """
        root = _resolve_root(path)
        unet_dir, scheduler_file = _locate(root, subfolder)
        config = read_json(unet_dir / "config.json", what="the network's diffusers config")
        scheduler_config = read_json(scheduler_file, what="a diffusers scheduler config")
        check_shift(
            schedule_from_config(scheduler_config, source=str(scheduler_file)),
            shift,
            source=str(scheduler_file),
        )
        class_name = config.get("_class_name")
        # diffusers' UNets or an exported student of ours: a fixed list, nothing named by the folder is imported
        from students import loadable_classes, model_classes

        model_class = loadable_classes().get(class_name)
        if model_class is None:
            raise ValueError(
                f"model at {unet_dir} is a {class_name!r}; supported classes are {SUPPORTED_CLASSES} (diffusers) "
                f"and {sorted(model_classes())} (students)"
            )
        unet = model_class.from_pretrained(unet_dir)
        check_finite_weights(named_tensors(unet), source=weights_source(unet_dir))
        parts = None
        if latent_parts and unet_dir in (root / "unet", root / "transformer"):
            from teachers.latent import load_latent_parts

            parts = load_latent_parts(root)
        teacher = cls(
            unet,
            scheduler_config,
            dtype=dtype,
            null_class=null_class,
            vae=None if parts is None else parts.vae,
            text_encoders=None if parts is None else parts.text_encoders,
            tokenizers=None if parts is None else parts.tokenizers,
            vae_dtype=vae_dtype,
            shift=shift,
            sample_size=sample_size,
            max_sequence_length=max_sequence_length,
        )
        teacher.source = str(path)
        teacher.weights_dir = unet_dir
        return teacher

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a pipeline-style folder: ``unet/`` (``transformer/`` for SD3/FLUX, safetensors) and
        ``scheduler/scheduler_config.json``, plus the latent parts (``vae/``, ``text_encoder*/``, ``tokenizer*/``) of a
        latent teacher."""
        from students.common import denoiser_folder

        directory = Path(directory)
        self.unet.save_pretrained(directory / denoiser_folder(type(self.unet).__name__))
        self.schedule.save_pretrained(directory / "scheduler")
        self.save_latent_parts(directory)

    def save_latent_parts(self, directory: str | Path) -> None:
        """Write this teacher's VAE, text encoders and tokenizers into a pipeline folder (nothing if pixel-space)."""
        directory = Path(directory)
        if self.vae is not None:
            self.vae.save_pretrained(directory / "vae")
        for i, (encoder, tokenizer) in enumerate(zip(self.text_encoders, self.tokenizers, strict=True)):
            suffix = "" if i == 0 else f"_{i + 1}"
            encoder.save_pretrained(directory / f"text_encoder{suffix}")
            tokenizer.save_pretrained(directory / f"tokenizer{suffix}")

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def prediction_type(self) -> str:
        return self.schedule.prediction_type

    @property
    def num_classes(self) -> int | None:
        """Number of real classes (null class excluded) for class-conditional teachers."""
        n = num_class_embeds(self.unet)
        return None if n is None else n - 1

    @property
    def in_channels(self) -> int:
        """Channels of the samples (latents) it denoises (FLUX's packed 2x2 patches unpacked)."""
        return latent_channels(self.unet)

    @property
    def sample_size(self) -> int:
        if self._sample_size is None:
            raise ValueError(
                f"the teacher's {type(self.unet).__name__} config has no sample_size: pass sample_size (the latent "
                "size to generate) to the teacher"
            )
        return self._sample_size

    @property
    def cond_kind(self) -> str | None:
        """ "class" (class labels), "text" (encoder hidden states) or None (unconditional)."""
        if self.null_class is not None:
            return "class"
        if self.transformer_family is not None or self.text_encoders or self._uncond is not None:
            return "text"
        blocks = getattr(self.unet.config, "down_block_types", None) or []
        return "text" if any("CrossAttn" in b for b in blocks) else None

    @property
    def is_sdxl(self) -> bool:
        return getattr(self.unet.config, "addition_embed_type", None) == "text_time"

    # -- latents --------------------------------------------------------------------------------------------
    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (8 for SD)."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_size(self) -> int:
        """The pixel size the teacher generates."""
        return self.sample_size * self.vae_scale_factor

    def _latent_scaling(self) -> tuple[float, float]:
        assert self.vae is not None
        scale = float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)
        shift = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        return scale, shift

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel images in [-1, 1] (B, 3, H, W) -> scaled latents (the posterior mean), float32."""
        if self.vae is None:
            raise ValueError("this teacher has no VAE (not a latent teacher): train on pixels directly")
        scale, shift = self._latent_scaling()
        vae_dtype = next(self.vae.parameters()).dtype
        encoded = self.vae.encode(images.to(vae_dtype))
        dist = getattr(encoded, "latent_dist", None)
        latents = dist.mean if dist is not None else encoded.latents
        return ((latents.float() - shift) * scale).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixel images in [-1, 1], float32."""
        if self.vae is None:
            raise ValueError("this teacher has no VAE (not a latent teacher)")
        scale, shift = self._latent_scaling()
        vae_dtype = next(self.vae.parameters()).dtype
        images = self.vae.decode((latents.float() / scale + shift).to(vae_dtype)).sample
        return images.float().clamp(-1.0, 1.0)

    # -- text -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str] | tuple[str, ...]) -> Cond:
        """Prompts -> the UNet's condition: hidden states (B, L, D) for SD 1.x/2.x; for SDXL a dict with both
        encoders' penultimate hidden states concatenated, the pooled ``text_embeds`` and ``time_ids``."""
        if not self.text_encoders:
            raise ValueError(
                "this teacher has no text encoder: load it from a pipeline folder with text_encoder/ and tokenizer/ "
                "(latent_parts=true), or train from precomputed embeddings (distill precompute)"
            )
        if self.transformer_family is not None:
            from teachers.prompts import encode_flux_prompts, encode_sd3_prompts

            encode = encode_sd3_prompts if self.transformer_family == "sd3" else encode_flux_prompts
            return encode(
                list(prompts),
                tokenizers=self.tokenizers,
                text_encoders=list(self.text_encoders),
                max_sequence_length=self.max_sequence_length,
                joint_attention_dim=int(self.unet.config.joint_attention_dim),
            )
        device = next(self.text_encoders[0].parameters()).device
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            ids = tokenizer(
                list(prompts),
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            if self.is_sdxl:
                out = encoder(ids, output_hidden_states=True)
                hidden.append(out.hidden_states[-2])
                pooled = out.text_embeds if hasattr(out, "text_embeds") else out[0]
            else:
                hidden.append(encoder(ids)[0])
        states = torch.cat(hidden, dim=-1).float()
        if not self.is_sdxl:
            return states
        size = self.image_size
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32, device=device)
        return {
            "encoder_hidden_states": states,
            "text_embeds": pooled.float(),
            "time_ids": time_ids.expand(len(prompts), 6),
        }

    def set_uncond(self, cond: Cond) -> None:
        """The unconditional (empty-prompt) condition, batch 1, e.g. from precomputed embeddings."""
        self._uncond = cond

    def uncond(self) -> Cond:
        """The empty-prompt condition (batch 1), encoded once."""
        if self._uncond is None:
            self._uncond = self.encode_prompt([""])
        return self._uncond

    # -- the contract -------------------------------------------------------------------------------------
    def null_cond(self, cond: Cond) -> Cond:
        """The unconditional counterpart of ``cond``: the null class for class-conditional teachers, the
        empty-prompt embeddings for text-conditioned ones."""
        if cond is not None and not is_text(cond):
            if self.null_class is None:
                raise ValueError("this teacher has no class embeddings, so it has no null class for guidance")
            return torch.full_like(cond, self.null_class)
        if cond is not None:
            if not self.text_encoders and self._uncond is None:
                raise ValueError(
                    "guidance on encoder hidden states needs the empty-prompt embeddings: load the teacher with its "
                    "text encoder, or call set_uncond() (precomputed shards carry it)"
                )
            batch = cond["encoder_hidden_states"].shape[0] if isinstance(cond, dict) else cond.shape[0]
            uncond = self.uncond()
            if isinstance(uncond, dict):
                device = (cond["encoder_hidden_states"] if isinstance(cond, dict) else cond).device  # type: ignore[index]
                return {k: v.to(device) for k, v in expand_cond(uncond, batch).items()}  # type: ignore[union-attr]
            return expand_cond(uncond, batch).to(cond.device)  # type: ignore[union-attr]
        raise ValueError("guidance needs a condition (cond is None)")

    def dummy_cond(self, batch: int, device: torch.device | str = "cpu") -> Cond:
        """A condition of the right kind and shape (for probing networks)."""
        kind = self.cond_kind
        if kind == "class":
            return torch.zeros(batch, dtype=torch.long, device=device)
        if kind == "text":
            if self.text_encoders or self._uncond is not None:
                return self.null_cond(torch.zeros(batch, 1, 1, device=device))
            if self.transformer_family is not None:
                config = self.unet.config
                return {
                    "encoder_hidden_states": torch.zeros(
                        batch, 1, int(config.joint_attention_dim), device=device
                    ),
                    POOLED_KEY: torch.zeros(batch, int(config.pooled_projection_dim), device=device),
                }
            dim = int(self.unet.config.cross_attention_dim)
            return torch.zeros(batch, 1, dim, device=device)
        return None

    @torch.no_grad()
    def predict(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        guidance_scale: float | torch.Tensor | None = None,
        *,
        uncond: torch.Tensor | None = None,
    ) -> Prediction:
        """Denoise ``x_t`` at integer timesteps ``t`` (B,) and return x0, eps and v, consistently.

        With ``guidance_scale`` w (a float or a per-sample (B,) tensor) other than None/1, the conditional and
        unconditional branches run in one batched forward and combine as ``uncond + w (cond - uncond)``.
        """
        null = None
        if guidance_scale is not None and cond is not None:
            null = uncond if uncond is not None else self.null_cond(cond)
        return denoise(self.unet, self.schedule, x_t, t, cond, guidance_scale=guidance_scale, uncond=null)

    @torch.no_grad()
    def sample(
        self,
        cond: Cond,
        noise: torch.Tensor,
        *,
        steps: int,
        guidance_scale: float | None = 1.0,
        sampler: str = "auto",
        spacing: str = "trailing",
        clip_x0: float | str | None = "auto",
        seeds: torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Samples (in the network's space: latents for a latent teacher) from ``noise`` in ``steps`` steps, at
        the classifier-free guidance scale ``guidance_scale`` (1 or None: off).

        The sampling contract every method shares: DDIM on ``spacing`` (trailing: a few-step grid starts at pure
        noise), or multistep consistency sampling when this folder's scheduler is an LCMScheduler; a network with a
        ``timestep_cond`` input takes ``w = scale - 1`` there (diffusers' LCM convention). Re-noising between
        consistency steps is keyed on ``(seeds, indices)`` per image and per step (default: seed 0, position in
        ``noise``). ``clip_x0`` "auto" clamps x0 to [-1, 1] for pixel teachers of the discrete family (never for
        latents, nor for flow teachers: diffusers' flow schedulers do not clip). A flow teacher samples by Euler on
        its scheduler's shifted sigma grid (FlowMatchEulerDiscreteScheduler), or FlowMatchLCMScheduler's
        consistency steps.
        """
        from teachers.network import guided_denoiser
        from teachers.sampling import keyed_step_noise, sample

        n = noise.shape[0]
        seeds = torch.zeros(n, dtype=torch.long) if seeds is None else seeds
        indices = torch.arange(n) if indices is None else indices
        if clip_x0 == "auto":
            clip_x0 = 1.0 if self.schedule.clip_pixels and not self.is_latent else None
        denoiser = guided_denoiser(
            self.unet, self.schedule, cond=cond, guidance_scale=guidance_scale, uncond=self.null_cond
        )
        return sample(
            denoiser=denoiser,
            schedule=self.schedule,
            noise=noise,
            steps=steps,
            sampler=sampler,
            spacing=spacing,
            clip_x0=clip_x0,  # type: ignore[arg-type]
            step_noise=keyed_step_noise(
                seeds=seeds, indices=indices, shape=tuple(noise.shape[1:]), device=noise.device
            ),
        )

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        return self.predict(*args, **kwargs)


def check_shift(schedule: Any, shift: float | None, *, source: str | None = None) -> None:
    """Refuse a ``shift`` that contradicts the scheduler config's (or any shift for a discrete schedule)."""
    if shift is None:
        return
    where = f" ({source})" if source else ""
    if schedule.family != "flow":
        raise ValueError(
            f"shift={shift}: the teacher's scheduler config{where} is a discrete (DDPM-family) schedule, which has no "
            "shift; remove shift from the config"
        )
    if schedule.use_dynamic_shifting:
        raise ValueError(
            f"shift={shift}: the teacher's scheduler config{where} shifts dynamically by image size "
            "(use_dynamic_shifting: true), so no fixed shift applies; remove shift from the config"
        )
    if not math.isclose(float(shift), schedule.shift, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(
            f"shift={shift} contradicts the teacher's scheduler config{where}, which says shift={schedule.shift}; "
            "the teacher was trained and is sampled at its own shift. Remove shift from the config (the teacher's "
            "is read from its scheduler config) or point at a teacher saved with that shift"
        )


def image_tokens(net: nn.Module, sample_size: int | None = None) -> int:
    """The token count dynamic shifting reads for a network's samples: ``(sample_size / patch_size)^2`` (a UNet
    has patch size 1, FLUX's packing 2), as the SD3 and FLUX pipelines compute it."""
    if sample_size is None:
        config = getattr(net, "config", None)
        size = getattr(config, "sample_size", 1) or 1
        sample_size = int(size[0] if isinstance(size, list | tuple) else size)
    return (int(sample_size) // patch_size(net)) ** 2


def check_sample_size(net: nn.Module, sample_size: int | None) -> int | None:
    """The latent size a teacher generates: ``sample_size`` if given, else the network config's (FLUX's default
    when it has none); refused unless whole tokens of the network's patch fit it."""
    config = getattr(net, "config", None)
    configured = getattr(config, "sample_size", None)
    if isinstance(configured, list | tuple):
        configured = configured[0]
    if sample_size is not None:
        if isinstance(sample_size, bool) or int(sample_size) != sample_size or sample_size < 1:
            raise ValueError(
                f"sample_size must be a positive whole number of latent pixels, got {sample_size}"
            )
        size = int(sample_size)
    elif configured is not None:
        size = int(configured)
    elif transformer_family(net) == "flux":
        size = FLUX_DEFAULT_SAMPLE_SIZE
    else:
        return None  # a network without a config size (e.g. a hand-written denoiser): asked for when needed
    patch = patch_size(net)
    if size % patch:
        raise ValueError(
            f"sample_size={size} is not a multiple of the network's patch size {patch} (latent pixels per token "
            f"side); pass a multiple of {patch}"
        )
    return size


def _resolve_root(path: str | Path) -> Path:
    text = str(path)
    name = builtin_name(text)
    if name is not None:
        # a shipped student is a complete sampler too (network + scheduler): the teacher of its own quantized copy
        if name not in list_builtins("teacher") and name in list_builtins("student"):
            return builtin_folder(name, kind="student")
        return builtin_folder(name, kind="teacher")
    root = Path(path).expanduser()
    if root.exists():
        return root
    if text.count("/") == 1 and not text.startswith((".", "/")):
        try:  # a Hugging Face id already in the user's cache; never downloads
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception:
            pass
    raise FileNotFoundError(
        f"teacher path {text!r} does not exist. Pass a local diffusers model or pipeline folder "
        f"(with unet/config.json and scheduler/scheduler_config.json), a Hugging Face id already in your local "
        f"cache, or {BUILTIN_PREFIX}digits for the shipped digits teacher."
    )


def _locate(root: Path, subfolder: str | None) -> tuple[Path, Path]:
    """Find the network folder and its scheduler config inside a model or pipeline folder."""
    if subfolder is not None:
        unet_dir = root / subfolder
    elif (root / "unet" / "config.json").is_file():
        unet_dir = root / "unet"
    elif (root / "transformer" / "config.json").is_file():
        unet_dir = root / "transformer"
    else:
        unet_dir = root
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no diffusers model config at {unet_dir / 'config.json'}; point the teacher path at a model folder "
            f"or a pipeline folder with a unet/ or transformer/ subfolder (or pass subfolder=...)"
        )
    candidates = [
        unet_dir / "scheduler_config.json",
        root / "scheduler" / "scheduler_config.json",
        unet_dir.parent / "scheduler" / "scheduler_config.json",
        root / "scheduler_config.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return unet_dir, candidate
    raise FileNotFoundError(
        f"no scheduler config for the teacher at {unet_dir}: looked for "
        f"{[str(c) for c in candidates]}. Save the training scheduler with scheduler.save_pretrained(...)."
    )
