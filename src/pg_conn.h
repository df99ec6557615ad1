/* libpq connections as every PostgreSQL user in iotpipe opens them (the sink's pool and its
 * maintenance connection, the registry loader): non-blocking, with keepalives, credentials only
 * from the conninfo, a service file, a password file or PG* variables, and logged by host, port and
 * database only: the conninfo string itself may hold a password and is never logged. */
#ifndef IOTPIPE_PG_CONN_H
#define IOTPIPE_PG_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

/* Server-side settings every connection gets unless the conninfo sets them. */
#define PG_CONNECT_TIMEOUT_MS 10000

/* main thread at start: false with err set when conninfo cannot be parsed. The message never
 * quotes conninfo. A bare word is a database name, as libpq takes it. */
bool pg_conninfo_check(const char *conninfo, char *err, size_t errlen);

/* any thread: starts a non-blocking connection (PQconnectStartParams); drive it with
 * PQconnectPoll. NULL only when out of memory. application_name defaults to app. */
PGconn *pg_conn_start(const char *conninfo, const char *app);

/* after CONNECTION_OK: non-blocking mode, and server notices dropped (they would go to stderr) */
bool pg_conn_ready(PGconn *c);

/* "host:port/dbname" of a connection (also of one still connecting), for logs */
void pg_conn_target(const PGconn *c, char *buf, size_t cap);

/* the first line of PQerrorMessage, without its trailing newline */
void pg_conn_error(const PGconn *c, char *buf, size_t cap);

/* the primary message of a failed result, with its DETAIL when there is one, on one line */
void pg_result_error(const PGresult *r, char *buf, size_t cap);

#endif
