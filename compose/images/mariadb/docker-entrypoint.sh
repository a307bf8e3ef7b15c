#!/bin/sh
# A subset of the upstream mariadb image's entrypoint: enough for splitmirror's tests and compose.
set -eu
case "${1:-mariadbd}" in -*) set -- mariadbd "$@" ;; esac
[ $# -gt 0 ] || set -- mariadbd
DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

if [ "$1" = mariadbd ] && [ "$(id -u)" = 0 ]; then
    # A bind-mounted data directory (a host path, or a restored copy) is handed to mysql.
    mkdir -p "$DATADIR" /run/mysqld
    find "$DATADIR" \! -user mysql -exec chown mysql:mysql '{}' +
    chown mysql:mysql /run/mysqld
    exec setpriv --reuid=mysql --regid=mysql --init-groups "$0" "$@"
fi

sql_escape() { printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g"; }

if [ "$1" = mariadbd ] && [ ! -d "$DATADIR/mysql" ]; then
    if [ -z "${MARIADB_ROOT_PASSWORD:-}" ]; then
        echo "error: the data directory is empty and MARIADB_ROOT_PASSWORD is not set; set it to initialise the server" >&2
        exit 1
    fi
    mariadb-install-db --user=mysql --datadir="$DATADIR" --auth-root-authentication-method=normal \
        --skip-test-db --skip-name-resolve >/dev/null 2>&1 \
        || { echo "error: mariadb-install-db failed in $DATADIR" >&2; exit 1; }
    mariadbd --user=mysql --datadir="$DATADIR" --skip-networking --socket="$SOCKET" &
    pid=$!
    for _ in $(seq 1 60); do
        mariadb-admin --socket="$SOCKET" -uroot ping >/dev/null 2>&1 && break
        sleep 0.5
    done
    password="$(sql_escape "$MARIADB_ROOT_PASSWORD")"
    {
        echo "SET sql_log_bin = 0;"
        # Only root@localhost (socket) and root@'%', both with the password: install-db's
        # password-less root@127.0.0.1 would otherwise win over '%' for local TCP connections.
        echo "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1', 'root'@'$(hostname)';"
        # printf, not echo: dash's echo would eat the backslashes sql_escape doubled.
        printf "ALTER USER 'root'@'localhost' IDENTIFIED BY '%s';\n" "$password"
        printf "CREATE USER 'root'@'%%' IDENTIFIED BY '%s';\n" "$password"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MARIADB_DATABASE:-}" ]; then echo "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;"; fi
    } | mariadb --socket="$SOCKET" -uroot
    kill "$pid"
    wait "$pid" || true
fi

exec "$@"
