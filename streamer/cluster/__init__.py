"""``streamer run CONFIG --engine ray``: the config's streams on a Ray cluster.

::

    controller (the driver: streamer run --engine ray)
      |-- places shards (plan.py) --> shard actors (shard.py): a Node each, its streams
      |                                  |  windows' model inputs (model size)
      |                                  v
      |                               runner actors (runner.py): the model, batching
      |                               the windows of every shard on every machine
      |-- owns P/N/available (its Last Will), P/N/shards, /metrics
      '-- reads P/N/+/prediction: a stream back under a new run gets a gap marker (gaps.py)

Ray is optional (``pip install 'streamer[ray]'``): nothing here is imported by a node
that runs without it, and :mod:`streamer.cluster.settings` imports no Ray.
"""
