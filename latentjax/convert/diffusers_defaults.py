"""The keyword defaults of the diffusers classes latentjax reads, as diffusers 0.42.1's
``__init__`` signatures declare them.

A ``config.json`` written by ``save_pretrained`` holds every argument of the version that wrote
it, so a file from an older diffusers lacks the arguments added since (sd-vae-ft-mse's has no
``scaling_factor``, no ``shift_factor``, no ``use_quant_conv``); ``from_config`` fills them from
the class's defaults, and the converters must fill the same values (``common.complete_config``).
``tests/test_convert_layouts.py`` compares each table with ``inspect.signature`` of the installed
class, so a diffusers upgrade that moves a default fails there instead of converting silently
differently. (Wan's table lives in ``latentjax/convert/wan.py``, checked the same way.)
"""

from __future__ import annotations

DEFAULTS: dict[str, dict] = {
    "AutoencoderKL": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",),
        "up_block_types": ("UpDecoderBlock2D",),
        "block_out_channels": (64,),
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 32,
        "scaling_factor": 0.18215,
        "shift_factor": None,
        "latents_mean": None,
        "latents_std": None,
        "force_upcast": True,
        "use_quant_conv": True,
        "use_post_quant_conv": True,
        "mid_block_add_attention": True,
    },
    "VQModel": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",),
        "up_block_types": ("UpDecoderBlock2D",),
        "block_out_channels": (64,),
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": 3,
        "sample_size": 32,
        "num_vq_embeddings": 256,
        "norm_num_groups": 32,
        "vq_embed_dim": None,
        "scaling_factor": 0.18215,
        "norm_type": "group",
        "mid_block_add_attention": True,
        "lookup_from_codebook": False,
        "force_upcast": False,
    },
    "AutoencoderTiny": {
        "in_channels": 3,
        "out_channels": 3,
        "encoder_block_out_channels": (64, 64, 64, 64),
        "decoder_block_out_channels": (64, 64, 64, 64),
        "act_fn": "relu",
        "upsample_fn": "nearest",
        "latent_channels": 4,
        "upsampling_scaling_factor": 2,
        "num_encoder_blocks": (1, 3, 3, 3),
        "num_decoder_blocks": (3, 3, 3, 1),
        "latent_magnitude": 3,
        "latent_shift": 0.5,
        "force_upcast": False,
        "scaling_factor": 1.0,
        "shift_factor": 0.0,
    },
    "AutoencoderDC": {
        "in_channels": 3,
        "latent_channels": 32,
        "attention_head_dim": 32,
        "encoder_block_types": "ResBlock",
        "decoder_block_types": "ResBlock",
        "encoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
        "decoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
        "encoder_layers_per_block": (2, 2, 2, 3, 3, 3),
        "decoder_layers_per_block": (3, 3, 3, 3, 3, 3),
        "encoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
        "decoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
        "upsample_block_type": "pixel_shuffle",
        "downsample_block_type": "pixel_unshuffle",
        "decoder_norm_types": "rms_norm",
        "decoder_act_fns": "silu",
        "encoder_out_shortcut": True,
        "decoder_in_shortcut": True,
        "decoder_conv_act_fn": "relu",
        "scaling_factor": 1.0,
    },
    # Also the defaults of a legacy ``Transformer2DModel`` config with norm_type
    # "ada_norm_zero": diffusers loads it as this class (model_loading_utils.py,
    # _CLASS_REMAPPING_DICT), so missing keys take these values, not Transformer2DModel's.
    "DiTTransformer2DModel": {
        "num_attention_heads": 16,
        "attention_head_dim": 72,
        "in_channels": 4,
        "out_channels": None,
        "num_layers": 28,
        "dropout": 0.0,
        "norm_num_groups": 32,
        "attention_bias": True,
        "sample_size": 32,
        "patch_size": 2,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": 1000,
        "upcast_attention": False,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-05,
    },
}
