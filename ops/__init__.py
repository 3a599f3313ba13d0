"""Operating the hub: the ops HTTP server (health, readiness, metrics); dashboards and alert rules."""
