"""splitmirror-oracle: the Oracle Database engine (python-oracledb, thin mode)."""
