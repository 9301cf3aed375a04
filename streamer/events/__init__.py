"""Events: spans in which a stream's label held, from its predictions (hysteresis).

* ``settings``  the ``events:`` config section (labels, on/off, min_windows, cooldown_s)
* ``event``     LabelEvent (the event, ``to_json()``) and EventMessage (new/update/end)
* ``tracker``   EventTracker: predictions in, transitions out to its listeners
"""
