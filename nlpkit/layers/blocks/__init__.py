"""Transformer blocks: encoder, decoder, ReZero and reuse variants."""
