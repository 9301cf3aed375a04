"""Snapshots: a bounded ring of recent JPEGs per stream, for events and the page."""
