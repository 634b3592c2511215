"""Encoder networks (BERT, MobileBERT, TransformerXL) and their presets; nothing else.

Every encoder takes the dict `input_word_ids`, `input_mask`, `input_type_ids` (int32 `[B, T]`)
and returns the dict `sequence_output`, `pooled_output`, `encoder_outputs`.
Saving, loading and converting models (any model, encoders included) is `nlpkit.models`.
"""

from nlpkit.encoders.bert import BertEncoder
from nlpkit.encoders.mobilebert import MobileBertEncoder
from nlpkit.encoders.presets import available_presets, build_encoder, encoder_config, load_config, load_preset
from nlpkit.encoders.transformer_xl import TransformerXLEncoder

__all__ = [
    "BertEncoder",
    "MobileBertEncoder",
    "TransformerXLEncoder",
    "available_presets",
    "build_encoder",
    "encoder_config",
    "load_config",
    "load_preset",
]
