"""Capture in processes of its own: PyAV decoding isolated from the node.

``capture: process`` (config, per node or per stream) runs each PyAV source (files,
RTSP/UDP/HTTP/SRT, v4l2) in a spawned process of its own (:mod:`.child`) that writes
converted frames and audio into a shared-memory ring of fixed slots (:mod:`.ring`);
the node reads them through :class:`.process.ProcessSource`, a Source like any other.
A decoder that crashes or hangs takes only its process: the stream reopens it with its
backoff, and the other streams never notice.
"""
