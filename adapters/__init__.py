"""Adapter families, one package each. Adapters import only ``bus.adapter_api`` from the core."""
