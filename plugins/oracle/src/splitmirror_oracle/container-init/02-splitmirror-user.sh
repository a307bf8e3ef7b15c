#!/bin/bash
# First start: the account splitmirror connects as, created by the script docs/databases/oracle.md
# gives DBAs (mounted at /splitmirror-init), with the password of $SPLITMIRROR_ORACLE_PASSWORD,
# the variable splitmirror itself reads.
set -euo pipefail
if [ -z "${SPLITMIRROR_ORACLE_PASSWORD:-}" ]; then
    echo "02-splitmirror-user.sh: SPLITMIRROR_ORACLE_PASSWORD is not set; no splitmirror account" >&2
    exit 1
fi
sqlplus -s / as sysdba @/splitmirror-init/splitmirror-user.sql "$SPLITMIRROR_ORACLE_PASSWORD"
