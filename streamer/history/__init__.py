"""The event history: every event and its snapshot in SQLite, bounded by age and size
(:mod:`streamer.history.store`), served at ``/api/events`` (:mod:`streamer.web.history`)."""
