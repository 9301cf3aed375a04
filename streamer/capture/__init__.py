"""Capture in processes of its own: PyAV decoding and microphones isolated from the node.

``capture: process`` (config, per node or per stream) runs each PyAV source (files,
RTSP/UDP/HTTP/SRT, v4l2) and each microphone (``mic:``) in a spawned process of its own
(:mod:`.child`) that writes converted frames and audio into a shared-memory ring of
fixed slots (:mod:`.ring`); the node reads them through :class:`.process.ProcessSource`,
a Source like any other. A decoder that crashes or hangs, or a PortAudio that deadlocks
when its sound server dies, takes only its process: the stream reopens it with its
backoff, and the other streams never notice.
"""
