#!/bin/bash
# First start of a gvenzl/oracle-free container (/container-entrypoint-initdb.d): ARCHIVELOG mode,
# the archived logs on the mounted data directory (the image archives to $ORACLE_HOME/dbs, off
# the volume), and FORCE LOGGING, as splitmirror's backup mode needs.  Used by compose/docker-compose.yml's oracle
# service and by the plugin's test harness.
set -euo pipefail
archive=/opt/oracle/oradata/FREE/archive
mkdir -p "$archive"
sqlplus -s / as sysdba <<SQL
WHENEVER SQLERROR EXIT FAILURE
ALTER SYSTEM SET log_archive_dest_1='LOCATION=$archive' SCOPE=SPFILE;
SHUTDOWN IMMEDIATE
STARTUP MOUNT
ALTER DATABASE ARCHIVELOG;
ALTER DATABASE OPEN;
ALTER DATABASE FORCE LOGGING;
ALTER PLUGGABLE DATABASE ALL OPEN;
SQL
