"""SavedModel export (TensorFlow-only): tokenizer, packer and model in one serving artefact."""
