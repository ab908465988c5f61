"""Example configurations shipped with Switchboard (tenants, agents, audio, flows).

Installed as package data so `switchboard up` finds the demo tenant in any install.
"""
