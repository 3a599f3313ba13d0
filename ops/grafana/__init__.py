"""Grafana dashboards for the hub, built from code (``dashboards.py``) and written as JSON files
that Grafana's provisioning or the Helm chart's sidecar ConfigMaps load as they are."""
