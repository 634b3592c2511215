"""Models: a model and its files.

- `model_dir`: the model directory every command's `--model` takes (save / load / tokenizer assets).
- `checkpoint_import`: readers for Hugging Face (safetensors, PyTorch zip) and Google TF BERT
  checkpoints; `convert`: import them into a model directory and export back to Hugging Face.
  (Training checkpoints, for resuming a run, are `nlpkit.training.checkpoints`.)
- `pretrainer`: `MaskedLMPretrainer`, an encoder + masked-LM head (+ NSP/SOP sentence head), and its
  losses; `recurrent_memory`: `RecurrentMemoryPretrainer`, the Transformer-XL one carrying memory.
- `classifier`: an encoder with a task head (what `nlpkit finetune` trains and `export` serves).

Networks and presets are `nlpkit.encoders`; readers are `nlpkit.data`.
"""

from nlpkit.models.classifier import TextClassifier
from nlpkit.models.model_dir import load_model, save_model_dir, tokenizer_assets

__all__ = ["TextClassifier", "load_model", "save_model_dir", "tokenizer_assets"]
