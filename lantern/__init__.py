"""What every layer of Lantern shares: the error tree (``lantern.errors``).

It sits beneath ``devices/``, ``rules/`` and ``gateway/`` so that the pure cores can raise the
same errors the gateway catches, without importing the gateway.
"""
