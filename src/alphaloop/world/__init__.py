"""Worlds (seed 000): the WorldService that carries strategies from backtest to paper
to live under a world's policy, never further than its governance allows.

Import what you need from its modules (the package itself loads nothing, so the SDK
does not pull in the server's FastAPI and uvicorn):

- :mod:`alphaloop.world.client`: the SDK, :class:`~alphaloop.world.client.WorldClient`,
  :func:`~alphaloop.world.client.submit` and ``submit_many``;
- :mod:`alphaloop.world.schemas`: the typed request and response bodies;
- :mod:`alphaloop.world.service`: the operations, independent of HTTP;
- :mod:`alphaloop.world.app` and :mod:`alphaloop.world.server`: the HTTP app and
  ``alphaloop world serve``;
- :mod:`alphaloop.world.policy`, :mod:`alphaloop.world.decide`,
  :mod:`alphaloop.world.campaign`: a world's policy, its decisions and campaigns.

The README's "Worlds: the WorldService" section walks through a world's lifecycle.
"""

__all__: list[str] = []
