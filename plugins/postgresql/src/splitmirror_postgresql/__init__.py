"""splitmirror's PostgreSQL engine (distribution ``splitmirror-postgresql``)."""
