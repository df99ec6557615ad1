/* libpq connection helpers (see pg_conn.h). */
#include <stdio.h>
#include <string.h>

#include "pg_conn.h"

/* any thread */
bool pg_conninfo_check(const char *conninfo, char *err, size_t errlen)
{
	if(!conninfo || !*conninfo){
		snprintf(err, errlen, "empty connection string");
		return false;
	}
	/* What libpq takes as a whole connection string rather than a database name. */
	bool full = strchr(conninfo, '=') || !strncmp(conninfo, "postgresql://", 13) || !strncmp(conninfo, "postgres://", 11);
	if(!full) return true;
	char *why = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &why);
	if(!opts){
		/* libpq's message may quote the string, password included: say what is wrong, not where */
		PQfreemem(why);
		snprintf(err, errlen, "not a valid libpq connection string (key=value pairs or a postgresql:// URI; "
				"its text is not shown as it may hold a password)");
		return false;
	}
	PQconninfoFree(opts);
	return true;
}

/* any thread */
PGconn *pg_conn_start(const char *conninfo, const char *app)
{
	/* Ours come first: with expand_dbname, whatever the conninfo sets overrides them. The
	 * keepalives and tcp_user_timeout notice a server that vanished without closing the socket. */
	const char *const keys[] = {"fallback_application_name", "connect_timeout", "keepalives", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname", NULL};
	const char *const values[] = {app, "10", "1", "10", "5", "3", "30000", conninfo, NULL};
	return PQconnectStartParams(keys, values, 1);
}

/* any thread */
static void pg_conn__quiet(void *arg, const PGresult *res)
{
	(void)arg;
	(void)res;
}

/* any thread */
bool pg_conn_ready(PGconn *c)
{
	PQsetNoticeReceiver(c, pg_conn__quiet, NULL);
	return PQsetnonblocking(c, 1) == 0;
}

/* any thread */
void pg_conn_target(const PGconn *c, char *buf, size_t cap)
{
	const char *host = c ? PQhost(c) : NULL;
	const char *port = c ? PQport(c) : NULL;
	const char *db = c ? PQdb(c) : NULL;
	snprintf(buf, cap, "%s:%s/%s", host && *host ? host : "?", port && *port ? port : "5432", db && *db ? db : "?");
}

/* any thread */
static void one_line(char *s)
{
	for(char *p = s; *p; p++){
		if(*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
	}
	size_t n = strlen(s);
	while(n > 0 && s[n - 1] == ' ') s[--n] = '\0';
}

/* any thread */
void pg_conn_error(const PGconn *c, char *buf, size_t cap)
{
	const char *m = c ? PQerrorMessage(c) : NULL;
	snprintf(buf, cap, "%s", m && *m ? m : "connection failed");
	one_line(buf);
}

/* any thread */
void pg_result_error(const PGresult *r, char *buf, size_t cap)
{
	const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	const char *d = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
	if(!m) m = PQresultErrorMessage(r);
	if(d) snprintf(buf, cap, "%s: %s", m && *m ? m : "error", d);
	else snprintf(buf, cap, "%s", m && *m ? m : "error");
	one_line(buf);
}
