"""splitmirror-mysql: the MySQL and MariaDB engine."""
