"""streamer: real-time multimodal stream processing with per-window fusion, over MQTT."""

__version__ = "0.1.0"
