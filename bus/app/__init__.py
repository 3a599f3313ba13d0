"""The composition root: where the hub is put together from its parts.

Only this package may import the layers above the core (``routing``, ``schemas``, ``ops``,
``adapters``): ``hub`` wires a running hub, ``cli`` the ``bus`` command, ``route_tests`` the
``bus test`` and ``bus routes explain`` runner. Everything else in ``bus/`` is the core, which
those layers build on and which imports none of them (tests/unit/test_layers.py holds this).
"""
