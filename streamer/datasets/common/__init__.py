"""Machinery the generated data sets share (AV-digits, AV-objects).

media.py    the clip folder format: mp4 (H.264 + AAC), .jsonl events, labels.csv, a pool
frames.py   a moving picture over a gradient, with blur, occluders, noise, dropped frames
speech.py   espeak-ng words in held-out voices, mixed into coloured noise
text.py     sentences that name the label, with corrections, distractors and typos
"""
