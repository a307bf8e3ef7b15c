#!/bin/sh
# A subset of the upstream mysql image's entrypoint: enough for splitmirror's tests and compose.
set -eu
case "${1:-mysqld}" in -*) set -- mysqld "$@" ;; esac
[ $# -gt 0 ] || set -- mysqld
DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

if [ "$1" = mysqld ] && [ "$(id -u)" = 0 ]; then
    # A bind-mounted data directory (a host path, or a restored copy) is handed to mysql.
    mkdir -p "$DATADIR" /run/mysqld
    find "$DATADIR" \! -user mysql -exec chown mysql:mysql '{}' +
    chown mysql:mysql /run/mysqld
    exec setpriv --reuid=mysql --regid=mysql --init-groups "$0" "$@"
fi

sql_escape() { printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g"; }

if [ "$1" = mysqld ] && [ ! -d "$DATADIR/mysql" ]; then
    if [ -z "${MYSQL_ROOT_PASSWORD:-}" ]; then
        echo "error: the data directory is empty and MYSQL_ROOT_PASSWORD is not set; set it to initialise the server" >&2
        exit 1
    fi
    # The server's own arguments too, as upstream does: some settings (page size,
    # lower_case_table_names) can only be chosen when the data directory is created.
    "$@" --initialize-insecure --datadir="$DATADIR" >/tmp/initialize.log 2>&1 \
        || { cat /tmp/initialize.log >&2; echo "error: mysqld --initialize-insecure failed in $DATADIR" >&2; exit 1; }
    "$@" --datadir="$DATADIR" --skip-networking --socket="$SOCKET" &
    pid=$!
    for _ in $(seq 1 120); do
        mysqladmin --socket="$SOCKET" -uroot ping >/dev/null 2>&1 && break
        sleep 0.5
    done
    password="$(sql_escape "$MYSQL_ROOT_PASSWORD")"
    {
        echo "SET sql_log_bin = 0;"
        # printf, not echo: dash's echo would eat the backslashes sql_escape doubled.
        printf "ALTER USER 'root'@'localhost' IDENTIFIED BY '%s';\n" "$password"
        printf "CREATE USER 'root'@'%%' IDENTIFIED BY '%s';\n" "$password"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MYSQL_DATABASE:-}" ]; then echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"; fi
    } | mysql --socket="$SOCKET" -uroot
    kill "$pid"  # SIGTERM: a clean shutdown
    wait "$pid" || true
fi

exec "$@"
