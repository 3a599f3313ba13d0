"""``bus migrate``: the job (plan, run, verify, rollback, cut-over) over the hub's own mapping,
routes and outbound adapters. What it keeps and checks (the journal, the checksums, the report)
is in ``bus/migrate/``. docs/migrations.md says how to use it."""
