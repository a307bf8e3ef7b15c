-- The account splitmirror connects as: a common user holding SYSBACKUP, Oracle's administrative
-- privilege for backups (backup mode, SUSPEND/RESUME, log switches, the control file backup and
-- the V$ views; no access to user data).  Run it in the root container as SYSDBA:
--
--     sqlplus / as sysdba @splitmirror-user.sql
--
-- SQL*Plus asks for the password ("Enter value for 1"); or give it as the first argument.
-- Remote logins AS SYSBACKUP need the password file (REMOTE_LOGIN_PASSWORDFILE = EXCLUSIVE, the
-- default); GRANT SYSBACKUP adds the user to it.  Then, for splitmirror:
--
--     [database]
--     url = "oracle://c##splitmirror@dbhost:1521/ORCLCDB"    # the root's service
--     privilege = "sysbackup"
--     password_file = "/etc/splitmirror/oracle.pw"          # mode 0600, or SPLITMIRROR_ORACLE_PASSWORD
SET VERIFY OFF
WHENEVER SQLERROR EXIT FAILURE
CREATE USER c##splitmirror IDENTIFIED BY "&1" CONTAINER = ALL;
GRANT SYSBACKUP TO c##splitmirror CONTAINER = ALL;
EXIT
