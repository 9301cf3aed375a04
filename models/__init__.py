"""Pure-PyTorch models for streamer: encoders, fusion, incremental inference, checkpoints.

This package imports nothing from ``streamer``: it knows no streams, MQTT or asyncio.
"""
