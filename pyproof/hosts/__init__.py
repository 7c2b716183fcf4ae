"""Many hosts: the cluster's host registry (pure), its authenticated channel, static lists.

- :mod:`pyproof.hosts.registry`: which hosts a master daemon knows, their
  state (listed, alive, lost) and what changed, as a pure state machine with
  time passed in (no clock, no sockets).
- :mod:`pyproof.hosts.channel`: the cluster channel: a mutual HMAC handshake
  on the cluster secret, then every frame sealed both ways with a per-channel
  key and numbered (no replay, no forged answer).
- The shells live in :mod:`pyproof.actors.hosts` (the daemon's hosts actor:
  the cluster endpoint, the registry, and the joiner of a daemon started with
  ``--join``).
"""
