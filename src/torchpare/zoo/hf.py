"""Tiny Hugging Face models built offline from small configs (random init, no hub access).

Each builder returns ``(model, example_inputs)`` where ``example_inputs`` is a dict of forward
keyword arguments (``pixel_values`` for vision models, ``input_ids`` + ``attention_mask`` for text
models) on the CPU. Models are in eval mode. ``transformers`` is imported inside the builders, so
importing this module does not require it.

Transformers use ``attn_implementation="eager"`` by default (every attention op is a plain aten op,
which graph tracing sees); pass ``attn_implementation="sdpa"`` to get the fused kernel instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchpare.registry import MODELS

__all__ = [
    "hf_resnet",
    "hf_convnext",
    "hf_mobilenetv2",
    "hf_vit",
    "hf_bert",
    "hf_gpt2",
    "hf_llama",
    "hf_tiny",
    "hf_tiny_inputs",
    "HF_TINY",
]

_IMAGE = (2, 3, 32, 32)
_TEXT = (2, 8)
_VOCAB = 64


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - transformers is a dev dependency
        raise ImportError(
            "torchpare.zoo.hf: the Hugging Face builders need transformers; "
            "install it with `pip install torchpare[hf]`."
        ) from err
    return transformers


def _pixels(size: tuple[int, ...] = _IMAGE) -> dict[str, torch.Tensor]:
    # A private generator keeps the example inputs identical whatever the global RNG state is.
    gen = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(size, generator=gen)}


def _tokens(size: tuple[int, int] = _TEXT, vocab: int = _VOCAB) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, vocab, size, generator=gen)
    attention_mask = torch.ones(size, dtype=torch.long)
    attention_mask[1, :2] = 0  # one left-padded row, so the mask path is exercised
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _ready(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return model.eval(), inputs


@MODELS.register()
def hf_resnet(num_labels: int = 10) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``ResNetForImageClassification``: bottleneck stages 16/32 wide, one block each, 32x32 images.

    Example:
        >>> model, inputs = hf_resnet()
        >>> model(**inputs).logits.shape
        torch.Size([2, 10])
    """
    tf = _transformers()
    config = tf.ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        layer_type="bottleneck",
        num_labels=num_labels,
    )
    return _ready(tf.ResNetForImageClassification(config), _pixels())


@MODELS.register()
def hf_convnext(num_labels: int = 10) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``ConvNextForImageClassification``: two stages 16/32 wide, layer scale 0.5 (so it matters).

    Example:
        >>> model, inputs = hf_convnext()
        >>> model(**inputs).logits.shape
        torch.Size([2, 10])
    """
    tf = _transformers()
    config = tf.ConvNextConfig(
        num_channels=3,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        num_stages=2,
        layer_scale_init_value=0.5,
        num_labels=num_labels,
    )
    model = tf.ConvNextForImageClassification(config)
    # Distinct per-channel scales, so a pruning rule that slices the wrong dim shows up in tests.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layer_scale_parameter"):
                param.uniform_(0.25, 1.0)
    return _ready(model, _pixels())


@MODELS.register()
def hf_mobilenetv2(num_labels: int = 10) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``MobileNetV2ForImageClassification`` at depth multiplier 0.25 (channels >= 8), 32x32 images.

    Example:
        >>> model, inputs = hf_mobilenetv2()
        >>> model(**inputs).logits.shape
        torch.Size([2, 10])
    """
    tf = _transformers()
    config = tf.MobileNetV2Config(
        num_channels=3,
        image_size=32,
        depth_multiplier=0.25,
        min_depth=8,
        finegrained_output=False,
        num_labels=num_labels,
    )
    return _ready(tf.MobileNetV2ForImageClassification(config), _pixels())


@MODELS.register()
def hf_vit(
    num_labels: int = 10, attn_implementation: str = "eager"
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``ViTForImageClassification``: hidden 32, 2 layers, 4 heads, 8x8 patches of 32x32 images.

    Example:
        >>> model, inputs = hf_vit()
        >>> model(**inputs).logits.shape
        torch.Size([2, 10])
    """
    tf = _transformers()
    config = tf.ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
        attn_implementation=attn_implementation,
    )
    return _ready(tf.ViTForImageClassification(config), _pixels())


@MODELS.register()
def hf_bert(
    num_labels: int = 3, attn_implementation: str = "eager"
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``BertForSequenceClassification``: vocab 64, hidden 32, 2 layers, 4 heads, sequences of 8.

    Example:
        >>> model, inputs = hf_bert()
        >>> model(**inputs).logits.shape
        torch.Size([2, 3])
    """
    tf = _transformers()
    config = tf.BertConfig(
        vocab_size=_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=num_labels,
        attn_implementation=attn_implementation,
    )
    return _ready(tf.BertForSequenceClassification(config), _tokens())


@MODELS.register()
def hf_gpt2(attn_implementation: str = "eager") -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``GPT2LMHeadModel`` (``Conv1D`` layers, fused qkv, tied embeddings): n_embd 32, 2 layers, 4 heads.

    Example:
        >>> model, inputs = hf_gpt2()
        >>> model(**inputs).logits.shape
        torch.Size([2, 8, 64])
    """
    tf = _transformers()
    config = tf.GPT2Config(
        vocab_size=_VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attn_implementation=attn_implementation,
    )
    return _ready(tf.GPT2LMHeadModel(config), _tokens())


@MODELS.register()
def hf_llama(attn_implementation: str = "eager") -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``LlamaForCausalLM`` with grouped-query attention: hidden 32, 2 layers, 4 query / 2 kv heads.

    Rotary embeddings, RMSNorm, SwiGLU MLP, untied LM head; ``head_dim`` is 8.

    Example:
        >>> model, inputs = hf_llama()
        >>> model(**inputs).logits.shape
        torch.Size([2, 8, 64])
        >>> model.config.num_attention_heads, model.config.num_key_value_heads
        (4, 2)
    """
    tf = _transformers()
    config = tf.LlamaConfig(
        vocab_size=_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        attn_implementation=attn_implementation,
    )
    return _ready(tf.LlamaForCausalLM(config), _tokens())


# -- tiny configs of many architectures (coverage of the pruning rules) --------------------------------
_T = dict(vocab_size=_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
_GQA = dict(_T, num_key_value_heads=2)
_ENC_DEC = dict(
    vocab_size=_VOCAB,
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=1,
)
# name -> (config class, model class, config kwargs, input kind)
HF_TINY: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "bert": ("BertConfig", "BertForSequenceClassification", _T, "text"),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", dict(_T, pad_token_id=1), "text"),
    "distilbert": (
        "DistilBertConfig",
        "DistilBertForSequenceClassification",
        dict(vocab_size=_VOCAB, dim=32, hidden_dim=64, n_layers=2, n_heads=4),
        "text",
    ),
    "albert": ("AlbertConfig", "AlbertForSequenceClassification", dict(_T, embedding_size=16), "text"),
    "deberta_v2": (
        "DebertaV2Config",
        "DebertaV2ForSequenceClassification",
        dict(
            _T,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=8,
            max_relative_positions=16,
            share_att_key=True,
        ),
        "text",
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(vocab_size=_VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64, bos_token_id=1, eos_token_id=2),
        "text",
    ),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", _T, "text"),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(_T, ffn_dim=64, word_embed_proj_dim=32), "text"),
    "bloom": (
        "BloomConfig",
        "BloomForCausalLM",
        dict(vocab_size=_VOCAB, hidden_size=32, n_layer=2, n_head=4),
        "text",
    ),
    "falcon": (
        "FalconConfig",
        "FalconForCausalLM",
        dict(vocab_size=_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4),
        "text",
    ),
    "falcon_gqa": (
        "FalconConfig",
        "FalconForCausalLM",
        dict(
            vocab_size=_VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_kv_heads=2,
            new_decoder_architecture=True,
        ),
        "text",
    ),
    "llama": ("LlamaConfig", "LlamaForCausalLM", _GQA, "text"),
    "mistral": ("MistralConfig", "MistralForCausalLM", _GQA, "text"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _GQA, "text"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(_GQA, head_dim=8), "text"),
    "phi": ("PhiConfig", "PhiForCausalLM", _T, "text"),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", _GQA, "text"),
    "t5": (
        "T5Config",
        "T5ForConditionalGeneration",
        dict(
            vocab_size=_VOCAB,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
        ),
        "seq2seq",
    ),
    "bart": ("BartConfig", "BartForConditionalGeneration", _ENC_DEC, "seq2seq"),
    "vit": (
        "ViTConfig",
        "ViTForImageClassification",
        dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
        ),
        "image",
    ),
    "swin": (
        "SwinConfig",
        "SwinForImageClassification",
        dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4),
        "image",
    ),
    "whisper": (
        "WhisperConfig",
        "WhisperForConditionalGeneration",
        dict(_ENC_DEC, num_mel_bins=8, max_source_positions=16, max_target_positions=16),
        "audio",
    ),
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(_GQA, num_local_experts=2, num_experts_per_tok=1),
        "text",
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(
            _GQA,
            num_experts=2,
            num_experts_per_tok=1,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
        ),
        "text",
    ),
    "segformer": (
        "SegformerConfig",
        "SegformerForImageClassification",
        dict(
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[32, 64],
            num_attention_heads=[2, 4],
            patch_sizes=[7, 3],
            strides=[4, 2],
            mlp_ratios=[2, 2],
            decoder_hidden_size=32,
            num_labels=3,
        ),
        "image",
    ),
}


def hf_tiny_inputs(kind: str, length: int = 6) -> dict[str, torch.Tensor]:
    """Example inputs for :data:`HF_TINY` models of input ``kind``; ``length`` is the sequence length
    (text, decoder side of seq2seq/audio) or the image side divided by 4 (images: ``4 * length`` pixels).

    Example:
        >>> sorted(hf_tiny_inputs("seq2seq"))
        ['attention_mask', 'decoder_input_ids', 'input_ids']
    """
    gen = torch.Generator().manual_seed(length)
    if kind == "image":
        return {"pixel_values": torch.randn(2, 3, 4 * length + 8, 4 * length + 8, generator=gen)}
    ids = torch.randint(3, _VOCAB, (2, length), generator=gen)
    ids[:, -1] = 2  # an end-of-sequence token (BART's classification head looks for it)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, 0] = 0
    if kind == "text":
        return {"input_ids": ids, "attention_mask": mask}
    decoder = torch.randint(3, _VOCAB, (2, length), generator=gen)
    if kind == "seq2seq":
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder}
    if kind == "audio":  # Whisper: mel features of 2 * max_source_positions frames
        return {"input_features": torch.randn(2, 8, 32, generator=gen), "decoder_input_ids": decoder}
    raise KeyError(f"hf_tiny_inputs(kind={kind!r}): unknown kind; use one of text, seq2seq, audio, image.")


def hf_tiny(
    name: str, length: int = 6, attn_implementation: str = "eager"
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A tiny randomly initialised transformers model of architecture ``name`` (see :data:`HF_TINY`).

    Built offline from a small config (hidden 32, 4 heads, 1-2 layers), in eval mode, with inputs
    from :func:`hf_tiny_inputs`.

    Raises:
        KeyError: unknown ``name`` (the message lists the known ones).

    Example:
        >>> model, inputs = hf_tiny("llama")
        >>> model(**inputs).logits.shape
        torch.Size([2, 6, 64])
    """
    if name not in HF_TINY:
        raise KeyError(f"hf_tiny({name!r}): unknown architecture; use one of {sorted(HF_TINY)}.")
    tf = _transformers()
    config_name, model_name, kwargs, kind = HF_TINY[name]
    config = getattr(tf, config_name)(**kwargs, attn_implementation=attn_implementation)
    return _ready(getattr(tf, model_name)(config), hf_tiny_inputs(kind, length))
