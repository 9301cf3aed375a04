"""Pure-PyTorch models for streamer: encoders, fusion, incremental inference, checkpoints.

This package imports nothing from ``streamer``: it knows no streams, MQTT or asyncio.

* ``spec``        ModelSpec: what a model expects of its inputs
* ``features``    log-mel frontend; ``tokenizer``: byte-level text ids
* ``encoders/``   video (per-frame CNN), audio (log-mel, conv1d, GRU), text (bytes, GRU)
* ``fusion``      FusionModel and FullBatch: tokens per item, transformer, logits
* ``windows``     WindowInputs and ``collate`` (windows -> FullBatch)
* ``incremental`` IncrementalFusion: cached per-item embeddings, one fuse per call
* ``checkpoint``  safetensors + config.json; ``make_reference`` writes ``reference/``
"""
