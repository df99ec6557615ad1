/* For the unit tests that need a live PostgreSQL: IOTPIPE_TEST_PG names a server, else (as root,
 * with Debian's PostgreSQL 15) a throwaway cluster is started with ci/pg.sh for the test program;
 * otherwise pg_base stays empty and the live tests skip themselves. Include after cmocka.h. */
#ifndef IOTPIPE_TEST_PG_LIVE_H
#define IOTPIPE_TEST_PG_LIVE_H

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

static char pg_base[512];       /* conninfo of the server; a test appends its dbname */
static char pg_dir[160];        /* the cluster this program started, "" when none */
static int pg_port;
static int dbseq;

static bool run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool run_cmd(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd) == 0;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	if(fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || getsockname(fd, (struct sockaddr *)&a, &l)){
		if(fd >= 0) close(fd);
		return 0;
	}
	close(fd);
	return ntohs(a.sin_port);
}

static int live_setup(void **state)
{
	(void)state;
	const char *env = getenv("IOTPIPE_TEST_PG");
	if(env && *env){
		snprintf(pg_base, sizeof(pg_base), "%s", env);
		return 0;
	}
	if(geteuid() != 0 || access("/usr/lib/postgresql/15/bin/postgres", X_OK)) return 0;
	pg_port = free_port();
	snprintf(pg_dir, sizeof(pg_dir), "/tmp/iotpipe-unit-%s-%d", program_invocation_short_name, (int)getpid());
	if(!pg_port || !run_cmd("bash '%s/ci/pg.sh' start %s %d >/dev/null", IOTPIPE_SOURCE_DIR, pg_dir, pg_port)){
		fprintf(stderr, "%s: could not start PostgreSQL; live tests skipped\n", program_invocation_short_name);
		pg_dir[0] = '\0';
		return 0;
	}
	snprintf(pg_base, sizeof(pg_base), "host=127.0.0.1 port=%d user=postgres", pg_port);
	return 0;
}

static int live_teardown(void **state)
{
	(void)state;
	if(pg_dir[0]){
		run_cmd("bash '%s/ci/pg.sh' stop %s >/dev/null", IOTPIPE_SOURCE_DIR, pg_dir);
		run_cmd("rm -rf %s", pg_dir);
	}
	return 0;
}

static void sql(PGconn *c, const char *q)
{
	PGresult *r = PQexec(c, q);
	if(PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK){
		fail_msg("%s: %s", q, PQresultErrorMessage(r));
	}
	PQclear(r);
}

#endif
