"""Config models and loading: models.py (core), routes.py (routing), delivery.py (delivery policy), loader.py (files)."""
