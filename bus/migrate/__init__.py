"""What a migration keeps and checks, shared by the job (``bus/app/migrate/``, which composes the
adapters, routes and schemas) and by the hub's API and console: the journal of runs (before-images,
checkpoints), the comparable form of values and the content checksums, the read-back verification,
the reconciliation report, progress and metrics, and the subscribers' outbound adapters as targets.
"""
