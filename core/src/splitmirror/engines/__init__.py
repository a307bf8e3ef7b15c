"""Built-in database engines (SQLite).  Server databases come as separate distributions."""
