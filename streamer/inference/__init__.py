"""Inference: model loading, device choice, and the batched runner off the event loop."""
