"""Voice activity detection: `silero` (default), `webrtc` (fallback), and `endpoint`, which
turns either one's probabilities into speech-started / speech-ended events.
"""
