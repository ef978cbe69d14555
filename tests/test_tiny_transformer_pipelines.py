"""The tiny offline SD3- and FLUX-shaped folders of ``distill.tiny_pipeline``: each loads in the stock diffusers
pipeline and samples finite, seed-deterministic, prompt-dependent images; the hand-made T5 tokenizer reloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", minversion="5.0")  # T5Tokenizer(vocab=...) is v5 API

from diffusers import FluxPipeline, StableDiffusion3Pipeline

from distill.tiny_pipeline import (
    TINY_T5,
    build_tiny_flux,
    build_tiny_sd3,
    main,
    write_tiny_t5_tokenizer,
)

PROMPT = "a photo of digit zero"
SIZE = 16  # sample_size 8 x vae scale factor 2


def _sample(pipe, prompt: str = PROMPT, *, seed: int = 0, **kwargs) -> np.ndarray:
    return pipe(
        prompt,
        height=SIZE,
        width=SIZE,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    ).images


def _load(cls, path, **kwargs):
    pipe = cls.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one torch thread (conftest)."""


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return _load(StableDiffusion3Pipeline, build_tiny_sd3(tmp_path_factory.mktemp("tiny_sd3") / "pipe"))


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    return _load(FluxPipeline, build_tiny_flux(tmp_path_factory.mktemp("tiny_flux") / "pipe"))


def test_t5_tokenizer_reloads_as_fast_and_appends_eos(tmp_path):
    from transformers import T5TokenizerFast

    size = write_tiny_t5_tokenizer(tmp_path, extra_words=("zebra",))
    tok = T5TokenizerFast.from_pretrained(tmp_path)
    assert len(tok) == size
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok(PROMPT).input_ids
    assert ids[-1] == tok.eos_token_id and len(ids) == 6  # one piece per word, then </s>
    assert tok.convert_ids_to_tokens(tok("zebra").input_ids) == ["▁zebra", "</s>"]
    odd = tok("Xylophone, 42 quirky jumps!").input_ids
    assert tok.unk_token_id not in odd and odd[-1] == tok.eos_token_id
    padded = tok(PROMPT, padding="max_length", max_length=256, truncation=True).input_ids
    assert len(padded) == 256 and padded[6:] == [tok.pad_token_id] * 250


def test_sd3_folder_samples_deterministic_prompt_dependent_images(sd3):
    assert sd3.vae.config.latent_channels == sd3.transformer.config.in_channels == 4
    assert (sd3.vae.config.scaling_factor, sd3.vae.config.shift_factor) == (1.5305, 0.0609)
    assert sd3.default_sample_size * sd3.vae_scale_factor == SIZE
    assert (
        sd3.transformer.config.joint_attention_dim == sd3.text_encoder_3.config.d_model == TINY_T5["d_model"]
    )
    pooled = sd3.text_encoder.config.projection_dim + sd3.text_encoder_2.config.projection_dim
    assert sd3.transformer.config.pooled_projection_dim == pooled
    image = _sample(sd3, guidance_scale=4.0)
    assert image.shape == (1, SIZE, SIZE, 3) and np.isfinite(image).all()
    np.testing.assert_array_equal(image, _sample(sd3, guidance_scale=4.0))
    assert not np.allclose(image, _sample(sd3, "a red square", guidance_scale=4.0))


def test_sd3_without_t5_samples_with_zero_t5_states(sd3, tmp_path):
    path = build_tiny_sd3(tmp_path / "no_t5", t5=False)
    index = json.loads((path / "model_index.json").read_text())
    assert index["text_encoder_3"] == index["tokenizer_3"] == [None, None]
    assert not (path / "text_encoder_3").exists()
    # diffusers refuses a null required component unless it is passed as None explicitly
    pipe = _load(StableDiffusion3Pipeline, path, text_encoder_3=None, tokenizer_3=None)
    assert pipe.text_encoder_3 is None
    # the other parts' weights do not depend on whether T5 was built ...
    for name, weight in pipe.transformer.state_dict().items():
        torch.testing.assert_close(weight, sd3.transformer.state_dict()[name], rtol=0, atol=0)
    image = _sample(pipe, guidance_scale=4.0)
    assert image.shape == (1, SIZE, SIZE, 3) and np.isfinite(image).all()
    # ... so the T5 states alone move the image: the T5 path of the full folder is live
    assert not np.allclose(image, _sample(sd3, guidance_scale=4.0))


def test_flux_folder_samples_deterministic_prompt_dependent_images(flux):
    config = flux.transformer.config
    assert config.in_channels == 4 * flux.vae.config.latent_channels == 16
    assert sum(config.axes_dims_rope) == config.attention_head_dim
    assert config.pooled_projection_dim == flux.text_encoder.config.hidden_size
    assert config.joint_attention_dim == flux.text_encoder_2.config.d_model and config.guidance_embeds
    assert (flux.vae.config.scaling_factor, flux.vae.config.shift_factor) == (0.3611, 0.1159)
    assert flux.scheduler.config.use_dynamic_shifting and flux.vae_scale_factor == 2
    image = _sample(flux, guidance_scale=3.5)
    assert image.shape == (1, SIZE, SIZE, 3) and np.isfinite(image).all()
    np.testing.assert_array_equal(image, _sample(flux, guidance_scale=3.5))
    assert not np.allclose(image, _sample(flux, "a red square", guidance_scale=3.5))


def test_flux_without_guidance_embeds_samples(tmp_path):
    pipe = _load(FluxPipeline, build_tiny_flux(tmp_path / "schnell", guidance_embeds=False, seed=1))
    assert not pipe.transformer.config.guidance_embeds
    image = _sample(pipe, guidance_scale=0.0)
    assert image.shape == (1, SIZE, SIZE, 3) and np.isfinite(image).all()


def test_cli_writes_loadable_sd3_folder(tmp_path, capsys):
    main([str(tmp_path / "cli_sd3"), "--family", "sd3", "--seed", "3"])
    assert "SD3" in capsys.readouterr().out
    pipe = _load(StableDiffusion3Pipeline, tmp_path / "cli_sd3")
    assert type(pipe.transformer).__name__ == "SD3Transformer2DModel" and pipe.text_encoder_3 is not None
    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad"), "--no-t5"])  # sd15 has no T5
