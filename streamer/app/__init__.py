"""The application: how the parts are wired. Open :mod:`streamer.app.node` first.

    node        Node: a config's streams, sources -> aligner -> runner -> sinks, under
                one task group; the shutdown sequence
    stream      StreamPipeline: one stream's sources (a task each, reopened with
                backoff) into its aligner, windows to the inference runner
    control     ModelSwitch: P/N/set/model, another checkpoint swapped in at run time
    node_control NodeControl: the node's set/ topics (model, a stream's enabled and
                thresholds) on one MQTT connection, with their retained echoes
    supervisor  ``streamer run --workers N``: N worker processes, each a Node with a
                share of the streams ("worker" means only this)
"""
