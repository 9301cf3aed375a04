"""Pure-PyTorch models for streamer: encoders, fusion, incremental inference, checkpoints.

This package imports nothing from ``streamer``: it knows no streams, MQTT or asyncio.

* ``spec``        ModelSpec: what a model expects of its inputs
* ``features``    log-mel frontend; ``tokenizer``: byte-level text ids
* ``encoders/``   video (per-frame CNN), audio (log-mel, conv1d, GRU), text (bytes, GRU);
                  ``encoders.registry`` builds them by name (today's three: ``builtin``)
* ``fusion``      FusionModel, FullBatch and Encoded (the fuse step's typed input):
                  tokens per item, transformer, logits
* ``windows``     WindowInputs and ``collate`` (windows -> FullBatch)
* ``incremental`` CachedFusion / IncrementalFusion: cached per-item embeddings, one fuse
                  per call; ``onnx_runtime`` the same on onnxruntime
* ``checkpoint``  safetensors + config.json; ``reference/`` is the shipped one
* ``training``    the training loop (modality dropout) and per-combination evaluation
* ``export``      ONNX / TorchScript export of the encoders and the fusion step
"""
