/* The PostgreSQL sink's rate against a raw binary COPY of the same rows into the same table, in one
 * run on one server. Each run, in turns:
 *   sink: metrics truncated; a sink (pg_pool_size, pg_batch_rows as given) started on an empty
 *         outbox and given time to connect; then n enriched records are appended and the clock runs
 *         until the sink's cursor is past the last one (committed in PostgreSQL);
 *   copy: metrics truncated; the same rows, encoded beforehand, go through one COPY ... FROM STDIN
 *         (FORMAT binary) in one transaction on one connection.
 * Prints one line per measurement: "sink rate=R" / "copy rate=R" (rows per second).
 *   usage: bench_pg_sink CONNINFO [rows] [runs] [pool] [batch_rows] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "config.h"
#include "journal.h"
#include "log.h"
#include "pg_copy.h"
#include "pg_schema.h"
#include "pg_sink.h"
#include "record.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static bool exec_ok(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
	if(!ok) fprintf(stderr, "bench_pg_sink: %s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
	return ok;
}

static long count_rows(PGconn *c)
{
	PGresult *r = PQexec(c, "SELECT count(*) FROM metrics");
	long n = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
	PQclear(r);
	return n;
}

/* the i-th reading: 1,000 devices, one second apart per device, all on yesterday (UTC) */
static void make_row(long i, int64_t base, char *dev, size_t cap, struct outrec *r)
{
	snprintf(dev, cap, "dev-%05ld", i % 1000);
	int64_t ts = base + (i / 1000) * 1000 + (i % 1000);
	*r = (struct outrec){
		.kind = REC_ENRICHED, .id = record_id_reading(dev, "temp", ts), .ts_ms = ts, .arrival_ms = ts + 5,
		.device_id = dev, .sensor_id = "temp", .unit = "Cel", .location = "site-7", .zone = "z3",
		.device_type = "thermo-hygrometer", .value = 20.0 + (double)(i % 97) / 10.0, .limit = 30,
		.score = 0.5, .flags = OUT_HAS_THRESHOLD,
	};
}

static double run_sink(const struct config *cfg, PGconn *c, long n, int64_t base)
{
	char dir[] = "/tmp/iotpipe-bench-pg-XXXXXX", err[512];
	if(!mkdtemp(dir)) return -1;
	struct journal_opts o = {.dir = dir, .max_bytes = 4ull << 30, .readers = {"pg", NULL}};
	struct journal *j = journal_open(&o, err, sizeof(err));
	if(!j){
		fprintf(stderr, "bench_pg_sink: %s\n", err);
		return -1;
	}
	struct metrics m;
	memset(&m, 0, sizeof(m));
	struct journal_reader *rd = journal_reader(j, "pg");
	struct pg_sink *s = pg_sink_start(cfg, rd, &m, err, sizeof(err));
	if(!s){
		fprintf(stderr, "bench_pg_sink: %s\n", err);
		return -1;
	}
	nap_ms(1000);   /* connected, schema checked */
	uint8_t buf[1024];
	double t0 = now_s();
	for(long i = 0; i < n; i++){
		char dev[32];
		struct outrec r;
		make_row(i, base, dev, sizeof(dev), &r);
		size_t len = outrec_encode(&r, buf, sizeof(buf));
		struct iovec iov = {buf, len};
		if(journal_append(j, REC_ENRICHED, &iov, 1, NULL) != JOURNAL_OK) return -1;
	}
	struct journal_stats st;
	journal_get_stats(j, &st);
	while(journal_reader_committed(rd) < st.next_lsn) nap_ms(1);
	double secs = now_s() - t0;
	pg_sink_stop(s);
	journal_close(j);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if(system(cmd)){}
	long got = count_rows(c);
	if(got != n){
		fprintf(stderr, "bench_pg_sink: the sink wrote %ld rows, not %ld\n", got, n);
		return -1;
	}
	return (double)n / secs;
}

static double run_copy(PGconn *c, long n, int64_t base)
{
	struct pg_tuples t;
	pg_tuples_init(&t);
	for(long i = 0; i < n; i++){
		char dev[32];
		struct outrec r;
		make_row(i, base, dev, sizeof(dev), &r);
		if(!pg_tuples_add(&t, &r, (uint64_t)i)) return -1;
	}
	char sql[512];
	snprintf(sql, sizeof(sql), "COPY metrics (%s) FROM STDIN (FORMAT binary)", pg_tables[PG_T_METRICS].columns);
	double t0 = now_s();
	if(!exec_ok(c, "BEGIN")) return -1;
	PGresult *r = PQexec(c, sql);
	if(PQresultStatus(r) != PGRES_COPY_IN){
		fprintf(stderr, "bench_pg_sink: COPY: %s", PQresultErrorMessage(r));
		return -1;
	}
	PQclear(r);
	bool ok = PQputCopyData(c, (const char *)pg_copy_header, PG_COPY_HEADER_LEN) == 1;
	for(size_t off = 0; ok && off < t.len; off += 256 * 1024){
		size_t k = t.len - off < 256 * 1024 ? t.len - off : 256 * 1024;
		ok = PQputCopyData(c, (const char *)t.buf + off, (int)k) == 1;
	}
	ok = ok && PQputCopyData(c, (const char *)pg_copy_trailer, PG_COPY_TRAILER_LEN) == 1 && PQputCopyEnd(c, NULL) == 1;
	r = PQgetResult(c);
	ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
	if(!ok) fprintf(stderr, "bench_pg_sink: COPY: %s", PQresultErrorMessage(r));
	PQclear(r);
	while((r = PQgetResult(c))) PQclear(r);
	if(!ok || !exec_ok(c, "COMMIT")) return -1;
	double secs = now_s() - t0;
	pg_tuples_free(&t);
	return (double)n / secs;
}

int main(int argc, char **argv)
{
	if(argc < 2){
		fprintf(stderr, "usage: bench_pg_sink CONNINFO [rows] [runs] [pool] [batch_rows]\n");
		return 2;
	}
	const char *conninfo = argv[1];
	long n = argc > 2 ? atol(argv[2]) : 500000;
	int runs = argc > 3 ? atoi(argv[3]) : 3;
	const char *pool = argc > 4 ? argv[4] : "2";
	const char *batch = argc > 5 ? argv[5] : "5000";
	char err[512];
	struct config_kv kv[] = {{"journal_dir", "/tmp"}, {"pg_conninfo", conninfo}, {"pg_pool_size", pool},
		{"pg_batch_rows", batch}};
	struct config cfg;
	if(!config_parse(kv, 4, &cfg, err, sizeof(err))){
		fprintf(stderr, "bench_pg_sink: %s\n", err);
		return 2;
	}
	PGconn *c = PQconnectdb(conninfo);
	if(PQstatus(c) != CONNECTION_OK){
		fprintf(stderr, "bench_pg_sink: %s", PQerrorMessage(c));
		return 1;
	}
	exec_ok(c, "SET client_min_messages = warning");
	int64_t day = pg_day_of_ms((int64_t)time(NULL) * 1000) - 1;
	int64_t base = day * PG_DAY_MS + 3600 * 1000;
	char ddl[512];
	pg_partition_ddl((int32_t)day, ddl, sizeof(ddl));
	if(!exec_ok(c, pg_schema_base_sql()) || !exec_ok(c, pg_schema_hot_sql()) || !exec_ok(c, ddl)) return 1;
	printf("rows=%ld pool=%s batch_rows=%s\n", n, pool, batch);
	for(int i = 0; i < runs; i++){
		/* the order alternates, so neither always runs on a warmer server */
		for(int k = 0; k < 2; k++){
			bool sink = (k == 0) == (i % 2 == 0);
			if(!exec_ok(c, "TRUNCATE metrics") || !exec_ok(c, "CHECKPOINT")) return 1;
			double rate = sink ? run_sink(&cfg, c, n, base) : run_copy(c, n, base);
			if(rate < 0) return 1;
			printf("%s rate=%.0f\n", sink ? "sink" : "copy", rate);
			fflush(stdout);
		}
	}
	PQfinish(c);
	config_free(&cfg);
	return 0;
}
