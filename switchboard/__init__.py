"""Switchboard: a self-hostable voice-AI platform built on supervised asyncio actors over NATS.

The top-level folders of the repository (`actors/`, `protocols/`, `supervisor/`, ...) install as
sub-packages of this one, so `actors/` is imported as `switchboard.actors`.
"""

__version__ = "0.1.0"
