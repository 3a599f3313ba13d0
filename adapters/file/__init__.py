"""Files: a drop folder of CSV or JSON Lines files read into events (batch ETL)."""
