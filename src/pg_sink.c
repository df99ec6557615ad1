/* The PostgreSQL sink (DESIGN.md sections 1 and 4).
 *
 * One thread owns everything: its outbox cursor, a pool of pg_pool_size non-blocking libpq
 * connections and one maintenance connection, multiplexed with poll() in a single event loop.
 * Records are read from the outbox into batches (pg_batch_rows rows, or pg_flush_ms after the
 * first one); each batch is one transaction on one connection, so up to pg_pool_size batches are
 * in flight. The cursor moves to the end of the last batch such that it and every batch before it
 * committed (pg_copy.h, pg_inflight), so a crash replays only what may not be written.
 *
 * A batch goes first as binary COPY straight into its tables, everything in one round trip
 * ("BEGIN;COPY metrics ...;COPY alerts ...;COMMIT"). A unique violation (a replay) or a row the
 * server refuses for its data sends it through per-connection temp staging tables with
 * INSERT ... SELECT ... ON CONFLICT DO NOTHING on the natural key, each table under a savepoint.
 * A table whose rows are refused is bisected until the bad rows are found; they go to the
 * quarantine table as sink_rejected with the server's message, and the rest of the batch is
 * written. Connection failures retry with backoff, forever: the outbox journal is the buffer.
 *
 * The maintenance connection applies the schema at start (pg_schema.h), makes the day partitions
 * of metrics ahead of time and drops those past hot_retention, hourly. A batch holding a day
 * without a partition makes it first, in a transaction of its own. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "log.h"
#include "pg_conn.h"
#include "pg_copy.h"
#include "pg_schema.h"
#include "pg_sink.h"
#include "record.h"
#include "thread.h"

#define PG_BATCH_BYTES (8u << 20)       /* a batch closes at this many tuple bytes, whatever its rows */
#define PG_READ_BURST 8192              /* records read per loop turn: connections are served between */
#define PG_IDLE_MS 5                    /* how often an idle sink looks at the outbox (it has no fd) */
#define PG_RETRY_MIN_MS 100
#define PG_RETRY_MAX_MS 5000
#define PG_MAINT_EVERY_MS (3600 * 1000)
#define PG_MAINT_RETRY_MS 10000
#define PG_STOP_MS 5000                 /* what pg_sink_stop gives in-flight batches */
#define PG_SEND_CHUNK (256 * 1024)
#define PG_KNOWN_DAYS 64
#define PG_ERR_LOG_MS 60000             /* a repeated error is logged again after this */
#define PG_SAVEPOINT "iotpipe"
#define PG_DDL_LOCK_TIMEOUT "SET LOCAL lock_timeout = '10s';"

enum batch_state { B_FREE, B_FILLING, B_QUEUED, B_RUNNING };

/* a row the server refused, waiting for its quarantine row to be written */
struct pg_reject {
	int table;
	size_t row;
	char why[400];
};

struct pg_batch {
	enum batch_state state;
	uint64_t seq;                   /* in the in-flight tracker */
	uint64_t lo, hi;                /* outbox LSNs [lo, hi) */
	struct pg_tuples rows[PG_T__COUNT];
	size_t nrows, bytes;
	int32_t *days;                  /* the days of its metrics rows */
	size_t ndays, daycap;
	int64_t opened_ms;              /* when its first record came: the flush clock */
	int64_t not_before;             /* retry backoff */
	int backoff_ms;
	int partition_retries;
	/* the staging way, after a conflict or a refused row */
	bool safe;
	bool bisecting;                 /* a data error was seen: one range per command from here */
	int table;                      /* the table being bisected */
	struct pg_bisect bis;
	struct pg_reject *rejects;
	size_t nrejects, rejcap, reject_at;
	int reject_try;                 /* 0: the full quarantine row; 1: the minimal one */
	struct pg_batch *next;          /* in the queue, by lo */
};

enum pgc_state { PGC_DOWN, PGC_CONNECTING, PGC_IDLE, PGC_BUSY };
enum maint_step { M_NONE, M_DETECT, M_SCHEMA, M_LIST, M_DDL };

/* one COPY of a command: rows [lo, hi) of a table, or a refused row's quarantine row */
struct pg_unit {
	int table;
	size_t lo, hi;
	bool reject;
};

struct pgc {
	PGconn *pg;
	enum pgc_state state;
	int id;
	bool maint;
	short events;                   /* what poll waits for while connecting */
	int64_t since;                  /* connecting since */
	int64_t retry_at;
	int backoff_ms;
	PGTransactionStatusType txn;    /* after the last command */
	/* the command in flight */
	char *sql;
	size_t sqllen, sqlcap;
	bool sql_oom;
	struct pg_unit units[PG_T__COUNT + 1];
	int nunits, unit_at;
	bool copying, want_write, commits;
	int piece;
	size_t piece_off;
	/* its outcome */
	bool failed;
	char sqlstate[6];
	bool has_constraint;
	int err_unit;                   /* the COPY the error came in or after; -1 before the first */
	char errmsg[512];
	PGresult *tuples;               /* maintenance: the rows of its query */
	struct pg_tuples scratch;       /* a refused row's quarantine row, while it is sent */
	struct pg_batch *b;
	enum maint_step mstep;
	enum pg_layout mlayout;
};

struct pg_sink {
	char *conninfo;
	int npool;
	size_t batch_rows;
	int64_t flush_ms, retention_ms, compress_after_ms;
	struct journal_reader *reader;
	struct metrics *m;
	pthread_t thread;
	_Atomic bool stop;

	struct pgc *conns;              /* npool of the pool, then the maintenance one */
	struct pgc *maint;
	struct pg_batch *batches;
	int nbatches;
	struct pg_batch *filling;
	struct pg_batch *queue;         /* closed, waiting for a connection, by lo */
	struct pg_inflight fl;
	uint64_t next_lo;
	uint64_t committed;
	bool drained;                   /* the outbox had nothing more at the last look */
	struct journal_rec held;        /* read but not added (out of memory): added first next turn */
	bool have_held;

	bool schema_ok, want_schema;
	enum pg_layout layout;
	int64_t maint_at;
	int32_t known[PG_KNOWN_DAYS];   /* days whose partition exists */
	int nknown;

	bool outage;                    /* a failure was logged; the next success logs the recovery */
	int64_t err_logged_at;
	char err_logged[256];
	char *tscale_sql;
};

/* pg sink thread */
static int backoff_next(int ms)
{
	if(ms < PG_RETRY_MIN_MS) return PG_RETRY_MIN_MS;
	return ms * 2 > PG_RETRY_MAX_MS ? PG_RETRY_MAX_MS : ms * 2;
}

/* pg sink thread: the same error over and over is logged once a minute */
static void pg_sink__log_error(struct pg_sink *s, int64_t now, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void pg_sink__log_error(struct pg_sink *s, int64_t now, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if(!strncmp(msg, s->err_logged, sizeof(s->err_logged) - 1) && now - s->err_logged_at < PG_ERR_LOG_MS) return;
	size_t n = strnlen(msg, sizeof(s->err_logged) - 1);
	memcpy(s->err_logged, msg, n);
	s->err_logged[n] = '\0';
	s->err_logged_at = now;
	ip_log(IP_LOG_WARNING, "iotpipe: pg sink: %s", msg);
}

/* --- the SQL of a command ------------------------------------------------------------------ */

/* pg sink thread */
static void sql_reset(struct pgc *c)
{
	c->sqllen = 0;
	c->sql_oom = false;
	c->nunits = 0;
	c->commits = false;
	if(c->sql) c->sql[0] = '\0';
}

/* pg sink thread */
static void sql_put(struct pgc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sql_put(struct pgc *c, const char *fmt, ...)
{
	for(;;){
		va_list ap;
		va_start(ap, fmt);
		size_t room = c->sqlcap - c->sqllen;
		int n = vsnprintf(c->sql ? c->sql + c->sqllen : NULL, c->sql ? room : 0, fmt, ap);
		va_end(ap);
		if(n < 0){
			c->sql_oom = true;
			return;
		}
		if(c->sql && (size_t)n < room){
			c->sqllen += (size_t)n;
			return;
		}
		size_t cap = c->sqlcap ? c->sqlcap : 4096;
		while(cap < c->sqllen + (size_t)n + 1) cap *= 2;
		char *p = realloc(c->sql, cap);
		if(!p){
			c->sql_oom = true;
			return;
		}
		c->sql = p;
		c->sqlcap = cap;
	}
}

/* pg sink thread: a COPY of rows [lo, hi) of table t, straight in or through its staging table */
static void sql_copy_unit(struct pgc *c, int t, size_t lo, size_t hi, bool staged, bool reject)
{
	const struct pg_table *tab = &pg_tables[t];
	if(staged){
		sql_put(c, "SAVEPOINT " PG_SAVEPOINT ";COPY %s (%s) FROM STDIN (FORMAT binary);"
				"INSERT INTO %s (%s) SELECT %s FROM %s ON CONFLICT (%s) DO NOTHING;TRUNCATE %s;"
				"RELEASE SAVEPOINT " PG_SAVEPOINT ";", tab->stage, tab->columns, tab->name, tab->columns,
				tab->columns, tab->stage, tab->key, tab->stage);
	}else{
		sql_put(c, "COPY %s (%s) FROM STDIN (FORMAT binary);", tab->name, tab->columns);
	}
	c->units[c->nunits++] = (struct pg_unit){t, lo, hi, reject};
}

/* --- partitions ----------------------------------------------------------------------------- */

/* pg sink thread */
static bool day_known(const struct pg_sink *s, int32_t d)
{
	for(int i = 0; i < s->nknown; i++) if(s->known[i] == d) return true;
	return false;
}

/* pg sink thread: a full cache forgets its oldest day, the least likely to be written again */
static void day_learn(struct pg_sink *s, int32_t d)
{
	if(day_known(s, d)) return;
	if(s->nknown == PG_KNOWN_DAYS){
		int oldest = 0;
		for(int i = 1; i < s->nknown; i++) if(s->known[i] < s->known[oldest]) oldest = i;
		s->known[oldest] = d;
		return;
	}
	s->known[s->nknown++] = d;
}

/* pg sink thread */
static void day_forget(struct pg_sink *s, int32_t d)
{
	for(int i = 0; i < s->nknown; i++){
		if(s->known[i] == d){
			s->known[i] = s->known[--s->nknown];
			return;
		}
	}
}

/* pg sink thread: the partitions a batch needs and the cache does not know, in a transaction of
 * their own: it holds the parent's lock for a moment, not for the batch */
static void sql_partitions(struct pg_sink *s, struct pgc *c, const struct pg_batch *b)
{
	if(s->layout != PG_LAYOUT_PARTITIONED) return;
	bool open = false;
	for(size_t i = 0; i < b->ndays; i++){
		char ddl[256];
		if(day_known(s, b->days[i]) || !pg_partition_ddl(b->days[i], ddl, sizeof(ddl))) continue;
		if(!open) sql_put(c, "BEGIN;" PG_DDL_LOCK_TIMEOUT "%s;", pg_schema_lock_sql());
		open = true;
		sql_put(c, "%s;", ddl);
	}
	if(open) sql_put(c, "COMMIT;");
}

/* --- connections ---------------------------------------------------------------------------- */

static void pg_sink__queue(struct pg_sink *s, struct pg_batch *b);
static void pg_sink__batch_reset(struct pg_batch *b);

/* pg sink thread: the connection is gone; its batch goes back to the queue for any connection */
static void pgc_lost(struct pg_sink *s, struct pgc *c, int64_t now, const char *why)
{
	char target[160];
	pg_conn_target(c->pg, target, sizeof(target));
	if(!s->outage){
		ip_log(IP_LOG_WARNING, "iotpipe: pg sink: %s %s: %s; retrying (the outbox keeps what is not written)",
				c->state == PGC_CONNECTING ? "cannot connect to" : "lost the connection to", target, why);
		s->outage = true;
	}
	METRIC_ADD(s->m, pg_retries, 1);
	if(c->pg) PQfinish(c->pg);
	c->pg = NULL;
	c->state = PGC_DOWN;
	c->copying = false;
	c->want_write = false;
	c->backoff_ms = backoff_next(c->backoff_ms);
	c->retry_at = now + c->backoff_ms;
	PQclear(c->tuples);
	c->tuples = NULL;
	if(c->b){
		struct pg_batch *b = c->b;
		c->b = NULL;
		pg_sink__batch_reset(b);
		b->not_before = now;
		pg_sink__queue(s, b);
	}
	if(c->maint){
		c->mstep = M_NONE;
		s->maint_at = now;
	}
}

/* pg sink thread */
static void pgc_connect(struct pg_sink *s, struct pgc *c, int64_t now)
{
	c->pg = pg_conn_start(s->conninfo, "iotpipe");
	c->state = PGC_CONNECTING;
	c->since = now;
	c->events = POLLOUT;
	if(!c->pg || PQstatus(c->pg) == CONNECTION_BAD){
		char why[256];
		pg_conn_error(c->pg, why, sizeof(why));
		pgc_lost(s, c, now, c->pg ? why : "out of memory");
	}
}

/* pg sink thread */
static void pgc_connect_poll(struct pg_sink *s, struct pgc *c, int64_t now)
{
	PostgresPollingStatusType st = PQconnectPoll(c->pg);
	if(st == PGRES_POLLING_FAILED){
		char why[256];
		pg_conn_error(c->pg, why, sizeof(why));
		pgc_lost(s, c, now, why);
		return;
	}
	if(st != PGRES_POLLING_OK){
		c->events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
		return;
	}
	if(!pg_conn_ready(c->pg)){
		pgc_lost(s, c, now, "cannot make the connection non-blocking");
		return;
	}
	c->state = PGC_IDLE;
	c->txn = PQTRANS_IDLE;
	if(c->id == 0 || c->maint){
		char target[160];
		pg_conn_target(c->pg, target, sizeof(target));
		ip_log(IP_LOG_INFO, "iotpipe: pg sink: %s connection to %s open", c->maint ? "maintenance" : "pool", target);
	}
}

/* pg sink thread: sends the command in c->sql */
static bool pgc_send(struct pg_sink *s, struct pgc *c, int64_t now)
{
	if(c->sql_oom){
		pgc_lost(s, c, now, "out of memory");
		return false;
	}
	c->failed = false;
	c->sqlstate[0] = '\0';
	c->has_constraint = false;
	c->err_unit = -1;
	c->errmsg[0] = '\0';
	c->unit_at = 0;
	c->copying = false;
	if(!PQsendQuery(c->pg, c->sql)){
		char why[256];
		pg_conn_error(c->pg, why, sizeof(why));
		pgc_lost(s, c, now, why);
		return false;
	}
	c->state = PGC_BUSY;
	int f = PQflush(c->pg);
	if(f < 0){
		pgc_lost(s, c, now, "cannot send");
		return false;
	}
	c->want_write = f == 1;
	return true;
}

/* pg sink thread: the bytes of the COPY in progress (header, tuples, trailer) */
static void pgc_piece(struct pg_sink *s, struct pgc *c, const uint8_t **p, size_t *n)
{
	const struct pg_unit *u = &c->units[c->unit_at - 1];
	if(c->piece == 0){
		*p = pg_copy_header;
		*n = PG_COPY_HEADER_LEN;
	}else if(c->piece == 2){
		*p = pg_copy_trailer;
		*n = PG_COPY_TRAILER_LEN;
	}else if(u->reject){
		*p = pg_tuples_span(&c->scratch, 0, c->scratch.n, n);
	}else{
		*p = pg_tuples_span(&c->b->rows[u->table], u->lo, u->hi, n);
	}
}

/* pg sink thread: feeds the COPY in progress; false when the connection failed. Stops when the
 * socket is full (want_write), and ends the COPY when everything is queued. */
static bool pgc_feed(struct pg_sink *s, struct pgc *c)
{
	while(c->piece < 3){
		const uint8_t *p;
		size_t n;
		pgc_piece(s, c, &p, &n);
		while(c->piece_off < n){
			/* what libpq holds goes out before more is queued: its buffer stays one chunk deep */
			int f = PQflush(c->pg);
			if(f < 0) return false;
			if(f == 1){
				c->want_write = true;
				return true;
			}
			size_t k = n - c->piece_off < PG_SEND_CHUNK ? n - c->piece_off : PG_SEND_CHUNK;
			int rc = PQputCopyData(c->pg, (const char *)p + c->piece_off, (int)k);
			if(rc < 0) return false;
			if(rc == 0){
				c->want_write = true;
				return true;
			}
			c->piece_off += k;
		}
		c->piece++;
		c->piece_off = 0;
	}
	int rc = PQputCopyEnd(c->pg, NULL);
	if(rc < 0) return false;
	if(rc == 0){
		c->want_write = true;
		return true;
	}
	c->copying = false;
	return true;
}

/* pg sink thread: the first error of a command is the one that counts; later ones are its echo */
static void pgc_error(struct pgc *c, const PGresult *r)
{
	if(c->failed) return;
	c->failed = true;
	const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", st ? st : "");
	c->has_constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) != NULL;
	c->err_unit = c->unit_at - 1;
	pg_result_error(r, c->errmsg, sizeof(c->errmsg));
}

static void pgc_done(struct pg_sink *s, struct pgc *c, int64_t now);

/* pg sink thread: moves a busy connection as far as its socket allows */
static void pgc_pump(struct pg_sink *s, struct pgc *c, int64_t now)
{
	char why[256];
	if(!PQconsumeInput(c->pg)) goto lost;
	for(;;){
		if(c->copying){
			if(!pgc_feed(s, c)) goto lost;
			if(c->copying) return;
		}
		int f = PQflush(c->pg);
		if(f < 0) goto lost;
		c->want_write = f == 1;
		if(c->want_write) return;
		if(PQisBusy(c->pg)) return;
		PGresult *r = PQgetResult(c->pg);
		if(!r){
			pgc_done(s, c, now);
			return;
		}
		switch(PQresultStatus(r)){
		case PGRES_COPY_IN:
			if(c->unit_at >= c->nunits){
				/* not ours: abandon it, and the command fails */
				if(PQputCopyEnd(c->pg, "iotpipe: unexpected COPY") < 0){
					PQclear(r);
					goto lost;
				}
				break;
			}
			c->unit_at++;
			c->copying = true;
			c->piece = 0;
			c->piece_off = 0;
			break;
		case PGRES_COMMAND_OK:
		case PGRES_EMPTY_QUERY:
			break;
		case PGRES_TUPLES_OK:
			if(c->maint){
				PQclear(c->tuples);
				c->tuples = r;
				r = NULL;
			}
			break;
		default:
			if(PQstatus(c->pg) == CONNECTION_BAD){
				PQclear(r);
				goto lost;
			}
			pgc_error(c, r);
			break;
		}
		PQclear(r);
	}
lost:
	pg_conn_error(c->pg, why, sizeof(why));
	pgc_lost(s, c, now, why);
}

/* --- batches -------------------------------------------------------------------------------- */

/* pg sink thread: back to the state of a batch never tried (its staging mode stays) */
static void pg_sink__batch_reset(struct pg_batch *b)
{
	b->bisecting = false;
	b->table = 0;
	b->nrejects = 0;
	b->reject_at = 0;
	b->reject_try = 0;
	b->state = B_QUEUED;
}

/* pg sink thread: into the queue, which stays in LSN order so the oldest batch goes first */
static void pg_sink__queue(struct pg_sink *s, struct pg_batch *b)
{
	struct pg_batch **pp = &s->queue;
	while(*pp && (*pp)->lo < b->lo) pp = &(*pp)->next;
	b->next = *pp;
	*pp = b;
	b->state = B_QUEUED;
}

/* pg sink thread: the batch committed (or had nothing to write) */
static void pg_sink__batch_done(struct pg_sink *s, struct pg_batch *b)
{
	size_t refused = b->nrejects;
	if(b->nrows > refused) METRIC_ADD(s->m, pg_written, b->nrows - refused);
	if(refused) METRIC_ADD(s->m, pg_rejected, refused);
	uint64_t c = pg_inflight_done(&s->fl, b->seq);
	if(c > s->committed){
		journal_commit(s->reader, c);
		s->committed = c;
	}
	for(int t = 0; t < PG_T__COUNT; t++) pg_tuples_reset(&b->rows[t]);
	b->nrows = b->bytes = b->ndays = 0;
	b->safe = false;
	b->partition_retries = 0;
	b->backoff_ms = 0;
	pg_sink__batch_reset(b);
	b->state = B_FREE;
}

/* pg sink thread: the filling batch is complete */
static void pg_sink__close(struct pg_sink *s, struct pg_batch *b)
{
	s->filling = NULL;
	b->seq = pg_inflight_push(&s->fl, b->hi);
	b->not_before = 0;
	if(b->nrows == 0){
		pg_sink__batch_done(s, b);
		return;
	}
	pg_sink__queue(s, b);
}

/* pg sink thread: a record into the filling batch; false when out of memory */
static bool pg_sink__add(struct pg_sink *s, struct pg_batch *b, const struct journal_rec *rec)
{
	struct outrec r;
	int t = rec->kind <= UINT16_MAX ? pg_table_of_kind((uint16_t)rec->kind) : -1;
	if(t < 0) return true;   /* raw records have no table */
	if(!outrec_decode((uint16_t)rec->kind, rec->body, rec->len, &r)){
		ip_log(IP_LOG_WARNING, "iotpipe: pg sink: skipping undecodable outbox record %" PRIu64, rec->lsn);
		return true;
	}
	size_t before = b->rows[t].len;
	if(!pg_tuples_add(&b->rows[t], &r, rec->lsn)) return false;
	if(t == PG_T_METRICS){
		int32_t d = pg_day_of_ms(r.ts_ms);
		bool have = false;
		for(size_t i = b->ndays; i-- > 0 && !have;) have = b->days[i] == d;
		if(!have){
			if(b->ndays == b->daycap){
				size_t cap = b->daycap ? b->daycap * 2 : 8;
				int32_t *p = realloc(b->days, cap * sizeof(*p));
				if(!p){
					b->rows[t].n--;
					b->rows[t].len = before;
					return false;
				}
				b->days = p;
				b->daycap = cap;
			}
			b->days[b->ndays++] = d;
		}
	}
	b->nrows++;
	b->bytes += b->rows[t].len - before;
	return true;
}

/* pg sink thread: reads the outbox into batches while there is a batch to fill */
static void pg_sink__read(struct pg_sink *s, int64_t now)
{
	for(int n = 0; n < PG_READ_BURST; n++){
		if(!s->filling){
			struct pg_batch *b = NULL;
			for(int i = 0; i < s->nbatches && !b; i++) if(s->batches[i].state == B_FREE) b = &s->batches[i];
			if(!b || pg_inflight_full(&s->fl)) return;
			b->state = B_FILLING;
			b->lo = b->hi = s->next_lo;
			b->opened_ms = 0;
			s->filling = b;
		}
		struct pg_batch *b = s->filling;
		struct journal_rec rec;
		if(s->have_held){
			rec = s->held;
		}else if(!journal_next(s->reader, &rec)){
			s->drained = true;
			return;
		}
		s->drained = false;
		if(!pg_sink__add(s, b, &rec)){
			/* keep it: the batch goes out as it is and the record starts the next one */
			s->held = rec;
			s->have_held = true;
			ip_log(IP_LOG_ERR, "iotpipe: pg sink: out of memory batching outbox record %" PRIu64, rec.lsn);
			if(b->hi > b->lo) pg_sink__close(s, b);
			return;
		}
		s->have_held = false;
		if(!b->opened_ms) b->opened_ms = now;
		b->hi = rec.lsn + 1;
		s->next_lo = b->hi;
		if(b->nrows >= s->batch_rows || b->bytes >= PG_BATCH_BYTES) pg_sink__close(s, b);
	}
}

/* pg sink thread: the direct way, one round trip: [partitions] BEGIN; COPY ...; COMMIT */
static void pg_sink__send_fast(struct pg_sink *s, struct pgc *c, struct pg_batch *b, int64_t now)
{
	sql_reset(c);
	if(c->txn != PQTRANS_IDLE) sql_put(c, "ROLLBACK;");
	sql_partitions(s, c, b);
	sql_put(c, "BEGIN;");
	for(int t = 0; t < PG_T__COUNT; t++){
		if(b->rows[t].n) sql_copy_unit(c, t, 0, b->rows[t].n, false, false);
	}
	sql_put(c, "COMMIT");
	c->commits = true;
	pgc_send(s, c, now);
}

/* pg sink thread: the staging way from the start: every table under its own savepoint, chained in
 * one command ending with COMMIT; it is cut into single ranges only if a row is refused */
static void pg_sink__send_safe(struct pg_sink *s, struct pgc *c, struct pg_batch *b, int64_t now)
{
	sql_reset(c);
	if(c->txn != PQTRANS_IDLE) sql_put(c, "ROLLBACK;");
	sql_partitions(s, c, b);
	sql_put(c, "BEGIN;");
	for(int t = 0; t < PG_T__COUNT; t++){
		sql_put(c, "CREATE TEMP TABLE IF NOT EXISTS %s (LIKE %s INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;",
				pg_tables[t].stage, pg_tables[t].name);
	}
	for(int t = 0; t < PG_T__COUNT; t++){
		if(b->rows[t].n) sql_copy_unit(c, t, 0, b->rows[t].n, true, false);
	}
	sql_put(c, "COMMIT");
	c->commits = true;
	pgc_send(s, c, now);
}

/* pg sink thread: the next table with rows after t, PG_T__COUNT when none */
static int next_table(const struct pg_batch *b, int t)
{
	for(t++; t < PG_T__COUNT; t++) if(b->rows[t].n) return t;
	return PG_T__COUNT;
}

/* pg sink thread: bisecting, one unit per command: a refused row's quarantine row first, else the
 * next range of the table at hand, else the next table; COMMIT goes with the last unit */
static void pg_sink__send_step(struct pg_sink *s, struct pgc *c, struct pg_batch *b, int64_t now)
{
	sql_reset(c);
	if(c->txn == PQTRANS_INERROR) sql_put(c, "ROLLBACK TO SAVEPOINT " PG_SAVEPOINT ";RELEASE SAVEPOINT " PG_SAVEPOINT ";");
	size_t lo, hi;
	if(b->reject_at < b->nrejects){
		const struct pg_reject *rj = &b->rejects[b->reject_at];
		size_t len;
		const uint8_t *tup = pg_tuples_span(&b->rows[rj->table], rj->row, rj->row + 1, &len);
		pg_tuples_reset(&c->scratch);
		if(!pg_tuples_add_reject(&c->scratch, (enum pg_table_id)rj->table, tup, len, b->rows[rj->table].lsn[rj->row],
				rj->why, clock_wall_ms(), b->reject_try > 0)){
			c->sql_oom = true;
		}
		sql_copy_unit(c, PG_T_QUARANTINE, 0, 1, true, true);
		if(b->reject_at + 1 == b->nrejects && !pg_bisect_pending(&b->bis) && next_table(b, b->table) == PG_T__COUNT){
			sql_put(c, "COMMIT");
			c->commits = true;
		}
		pgc_send(s, c, now);
		return;
	}
	while(!pg_bisect_next(&b->bis, &lo, &hi)){
		b->table = next_table(b, b->table);
		if(b->table == PG_T__COUNT){
			sql_put(c, "COMMIT");
			c->commits = true;
			pgc_send(s, c, now);
			return;
		}
		pg_bisect_init(&b->bis, 0, b->rows[b->table].n);
	}
	sql_copy_unit(c, b->table, lo, hi, true, false);
	if(pg_bisect_pending(&b->bis) == 1 && next_table(b, b->table) == PG_T__COUNT){
		sql_put(c, "COMMIT");
		c->commits = true;
	}
	pgc_send(s, c, now);
}

/* pg sink thread: a connection takes a batch */
static void pg_sink__start(struct pg_sink *s, struct pgc *c, struct pg_batch *b, int64_t now)
{
	c->b = b;
	b->state = B_RUNNING;
	if(b->safe) pg_sink__send_safe(s, c, b, now);
	else pg_sink__send_fast(s, c, b, now);
}

/* pg sink thread: a refused row: remember it, its quarantine row is written next */
static bool pg_sink__refuse(struct pg_batch *b, int t, size_t row, const char *why)
{
	if(b->nrejects == b->rejcap){
		size_t cap = b->rejcap ? b->rejcap * 2 : 8;
		struct pg_reject *p = realloc(b->rejects, cap * sizeof(*p));
		if(!p) return false;
		b->rejects = p;
		b->rejcap = cap;
	}
	struct pg_reject *rj = &b->rejects[b->nrejects++];
	rj->table = t;
	rj->row = row;
	size_t n = strnlen(why, sizeof(rj->why) - 1);
	memcpy(rj->why, why, n);
	rj->why[n] = '\0';
	return true;
}

/* pg sink thread: give the batch up for now; a connection takes it again after backoff */
static void pg_sink__retry(struct pg_sink *s, struct pgc *c, struct pg_batch *b, int64_t now)
{
	c->b = NULL;
	METRIC_ADD(s->m, pg_retries, 1);
	pg_sink__batch_reset(b);
	b->backoff_ms = backoff_next(b->backoff_ms);
	b->not_before = now + b->backoff_ms;
	pg_sink__queue(s, b);
}

/* pg sink thread: a pool connection finished a command of its batch */
static void pg_sink__batch_result(struct pg_sink *s, struct pgc *c, int64_t now)
{
	struct pg_batch *b = c->b;
	if(!b) return;
	if(!c->failed){
		if(s->outage){
			char target[160];
			pg_conn_target(c->pg, target, sizeof(target));
			ip_log(IP_LOG_NOTICE, "iotpipe: pg sink: writing to %s again", target);
			s->outage = false;
		}
		c->backoff_ms = 0;
		for(size_t i = 0; i < b->ndays; i++) day_learn(s, b->days[i]);
		if(!b->bisecting && c->commits){
			c->b = NULL;
			pg_sink__batch_done(s, b);
			return;
		}
		if(b->bisecting){
			if(c->nunits && c->units[0].reject){
				b->reject_at++;
				b->reject_try = 0;
			}else{
				size_t bad;
				pg_bisect_result(&b->bis, true, &bad);
			}
		}
		if(c->commits){
			c->b = NULL;
			pg_sink__batch_done(s, b);
			return;
		}
		pg_sink__send_step(s, c, b, now);
		return;
	}

	enum pg_errclass ec = pg_errclass(c->sqlstate, c->has_constraint);
	if(ec == PG_E_NO_PARTITION){
		/* a partition the cache believed in is gone (dropped meanwhile): make them again, once */
		s->nknown = 0;
		if(++b->partition_retries <= 1){
			pg_sink__batch_reset(b);
			b->state = B_RUNNING;
			pg_sink__start(s, c, b, now);
			return;
		}
		ec = PG_E_DATA;   /* a day no partition can be made for: the row is bad */
	}
	if(ec == PG_E_UNIQUE && b->safe) ec = PG_E_DATA;   /* another unique index than the natural key */
	if((ec == PG_E_DATA || ec == PG_E_UNIQUE) && c->err_unit < 0) ec = PG_E_TRANSIENT;
	switch(ec){
	case PG_E_UNIQUE:
	case PG_E_DATA:
		if(!b->safe){
			/* a replay, or a bad row: the staging way, at once, on this connection */
			b->safe = true;
			pg_sink__send_safe(s, c, b, now);
			return;
		}
		{
			const struct pg_unit *u = &c->units[c->err_unit];
			if(u->reject){
				if(b->reject_try++ > 0){
					const struct pg_reject *rj = &b->rejects[b->reject_at];
					ip_log(IP_LOG_ERR, "iotpipe: pg sink: a %s row (outbox LSN %" PRIu64 ") was refused (%s), and so was "
							"its quarantine row (%s); it is not in PostgreSQL", pg_tables[rj->table].name,
							b->rows[rj->table].lsn[rj->row], rj->why, c->errmsg);
					b->reject_at++;
					b->reject_try = 0;
				}
			}else{
				if(!b->bisecting){
					/* the chained command stopped at this table: those before it are written */
					b->bisecting = true;
					b->table = u->table;
					pg_bisect_init(&b->bis, 0, b->rows[u->table].n);
				}
				size_t bad;
				if(pg_bisect_result(&b->bis, false, &bad)){
					ip_log(IP_LOG_WARNING, "iotpipe: pg sink: PostgreSQL refused a %s row (outbox LSN %" PRIu64 "): %s; "
							"it goes to quarantine as sink_rejected", pg_tables[b->table].name,
							b->rows[b->table].lsn[bad], c->errmsg);
					if(!pg_sink__refuse(b, b->table, bad, c->errmsg)){
						pg_sink__retry(s, c, b, now);
						return;
					}
				}
			}
		}
		pg_sink__send_step(s, c, b, now);
		return;
	case PG_E_SCHEMA:
		pg_sink__log_error(s, now, "writing a batch failed: %s (SQLSTATE %s); re-applying the schema and retrying",
				c->errmsg, c->sqlstate);
		s->want_schema = true;
		s->maint_at = now;
		pg_sink__retry(s, c, b, now);
		return;
	default:
		pg_sink__log_error(s, now, "writing a batch failed: %s (SQLSTATE %s); retrying", c->errmsg,
				c->sqlstate[0] ? c->sqlstate : "none");
		pg_sink__retry(s, c, b, now);
		return;
	}
}

/* --- maintenance ---------------------------------------------------------------------------- */

/* pg sink thread: the maintenance connection's next command, when one is due */
static void pg_sink__maint_start(struct pg_sink *s, struct pgc *c, int64_t now)
{
	sql_reset(c);
	if(c->txn != PQTRANS_IDLE) sql_put(c, "ROLLBACK;");
	if(!s->schema_ok || s->want_schema){
		c->mstep = M_DETECT;
		sql_put(c, "%s", pg_schema_detect_sql());
	}else if(s->layout == PG_LAYOUT_PARTITIONED){
		c->mstep = M_LIST;
		sql_put(c, "%s", pg_partitions_sql());
	}else{
		s->maint_at = now + PG_MAINT_EVERY_MS;
		return;
	}
	pgc_send(s, c, now);
}

/* pg sink thread: creates ahead and drops past retention, from the partitions that exist */
static void pg_sink__maint_ddl(struct pg_sink *s, struct pgc *c, int64_t now)
{
	int n = c->tuples ? PQntuples(c->tuples) : 0;
	const char **names = calloc((size_t)n + 1, sizeof(*names));
	size_t *drop = calloc((size_t)n + 1, sizeof(*drop));
	sql_reset(c);
	if(!names || !drop){
		c->sql_oom = true;
		goto failed;
	}
	for(int i = 0; i < n; i++) names[i] = PQgetvalue(c->tuples, i, 0);
	int64_t wall = clock_wall_ms();
	size_t nd = pg_retention_drops(names, (size_t)n, wall, s->retention_ms, drop);
	sql_put(c, "BEGIN;" PG_DDL_LOCK_TIMEOUT "%s;", pg_schema_lock_sql());
	int32_t today = pg_day_of_ms(wall);
	for(int32_t d = today; d <= today + PG_DAYS_AHEAD; d++){
		char ddl[256];
		if(pg_partition_ddl(d, ddl, sizeof(ddl))) sql_put(c, "%s;", ddl);
	}
	for(size_t i = 0; i < nd; i++){
		int32_t d;
		sql_put(c, "DROP TABLE IF EXISTS %s;", names[drop[i]]);
		if(pg_partition_day(names[drop[i]], &d)) day_forget(s, d);
		ip_log(IP_LOG_NOTICE, "iotpipe: pg sink: dropping partition %s (past hot_retention)", names[drop[i]]);
	}
	sql_put(c, "COMMIT");
	c->mstep = M_DDL;
failed:
	free(names);
	free(drop);
	PQclear(c->tuples);
	c->tuples = NULL;
	pgc_send(s, c, now);
}

/* pg sink thread: the maintenance connection finished a command */
static void pg_sink__maint_result(struct pg_sink *s, struct pgc *c, int64_t now)
{
	if(c->failed){
		pg_sink__log_error(s, now, "maintenance (%s) failed: %s (SQLSTATE %s); retrying in %d s",
				c->mstep == M_SCHEMA ? "applying the schema" : c->mstep == M_DDL ? "partitions" : "inspecting the database",
				c->errmsg, c->sqlstate[0] ? c->sqlstate : "none", PG_MAINT_RETRY_MS / 1000);
		PQclear(c->tuples);
		c->tuples = NULL;
		c->mstep = M_NONE;
		s->maint_at = now + PG_MAINT_RETRY_MS;
		return;
	}
	switch(c->mstep){
	case M_DETECT: {
		const PGresult *r = c->tuples;
		bool have = r && PQntuples(r) == 1 && PQnfields(r) == 3;
		bool ts = have && !PQgetisnull(r, 0, 0);
		char relkind = have && !PQgetisnull(r, 0, 1) ? PQgetvalue(r, 0, 1)[0] : 0;
		bool avail = have && PQgetvalue(r, 0, 2)[0] == 't';
		c->mlayout = pg_schema_layout(ts, relkind);
		if(!ts && avail && !s->schema_ok){
			ip_log(IP_LOG_NOTICE, "iotpipe: pg sink: timescaledb is available but not installed in this database "
					"(CREATE EXTENSION timescaledb makes metrics a hypertable, for a new database)");
		}
		PQclear(c->tuples);
		c->tuples = NULL;
		sql_reset(c);
		sql_put(c, "BEGIN;%s;\n%s", pg_schema_lock_sql(), pg_schema_base_sql());
		if(c->mlayout == PG_LAYOUT_TIMESCALE) sql_put(c, "%s", s->tscale_sql);
		else sql_put(c, "%s", pg_schema_hot_sql());
		sql_put(c, "COMMIT");
		c->mstep = M_SCHEMA;
		pgc_send(s, c, now);
		return;
	}
	case M_SCHEMA: {
		if(!s->schema_ok || s->layout != c->mlayout){
			char target[160];
			pg_conn_target(c->pg, target, sizeof(target));
			ip_log(IP_LOG_NOTICE, "iotpipe: pg sink: schema ready in %s (metrics: %s)", target, pg_layout_name(c->mlayout));
		}
		s->layout = c->mlayout;
		s->schema_ok = true;
		s->want_schema = false;
		if(s->layout == PG_LAYOUT_PARTITIONED){
			sql_reset(c);
			sql_put(c, "%s", pg_partitions_sql());
			c->mstep = M_LIST;
			pgc_send(s, c, now);
			return;
		}
		break;
	}
	case M_LIST:
		pg_sink__maint_ddl(s, c, now);
		return;
	case M_DDL: {
		int32_t today = pg_day_of_ms(clock_wall_ms());
		for(int32_t d = today; d <= today + PG_DAYS_AHEAD; d++) day_learn(s, d);
		break;
	}
	default:
		break;
	}
	c->mstep = M_NONE;
	s->maint_at = now + PG_MAINT_EVERY_MS;
}

/* pg sink thread: a command's last result is in */
static void pgc_done(struct pg_sink *s, struct pgc *c, int64_t now)
{
	c->state = PGC_IDLE;
	c->txn = PQtransactionStatus(c->pg);
	if(c->maint) pg_sink__maint_result(s, c, now);
	else pg_sink__batch_result(s, c, now);
}

/* --- the event loop ------------------------------------------------------------------------- */

/* pg sink thread: batches due go to idle connections, connections due are reopened */
static void pg_sink__dispatch(struct pg_sink *s, int64_t now, bool stopping)
{
	struct pg_batch *f = s->filling;
	if(f && f->hi > f->lo && (stopping || now - f->opened_ms >= s->flush_ms)) pg_sink__close(s, f);

	for(int i = 0; i <= s->npool; i++){
		struct pgc *c = &s->conns[i];
		if(c->state == PGC_DOWN && !stopping && now >= c->retry_at) pgc_connect(s, c, now);
		else if(c->state == PGC_CONNECTING && now - c->since > PG_CONNECT_TIMEOUT_MS) pgc_lost(s, c, now, "timed out");
	}
	if(s->maint->state == PGC_IDLE && s->maint->mstep == M_NONE && !stopping && now >= s->maint_at){
		pg_sink__maint_start(s, s->maint, now);
	}
	if(!s->schema_ok) return;
	for(int i = 0; i < s->npool; i++){
		struct pgc *c = &s->conns[i];
		if(c->state != PGC_IDLE || c->b) continue;
		struct pg_batch **pp = &s->queue;
		while(*pp && (*pp)->not_before > now) pp = &(*pp)->next;
		if(!*pp) break;
		struct pg_batch *b = *pp;
		*pp = b->next;
		b->next = NULL;
		pg_sink__start(s, c, b, now);
	}
}

/* pg sink thread: how long poll may sleep */
static int pg_sink__timeout(const struct pg_sink *s, int64_t now)
{
	int64_t t = 1000;
	bool room = s->filling != NULL;
	for(int i = 0; i < s->nbatches && !room; i++) room = s->batches[i].state == B_FREE;
	if(room && !pg_inflight_full(&s->fl)) t = s->drained ? PG_IDLE_MS : 0;
	if(s->filling && s->filling->hi > s->filling->lo){
		int64_t due = s->filling->opened_ms + s->flush_ms - now;
		if(due < t) t = due;
	}
	bool idle = false;
	for(int i = 0; i < s->npool; i++) idle |= s->conns[i].state == PGC_IDLE && !s->conns[i].b;
	if(idle && s->schema_ok){
		for(const struct pg_batch *b = s->queue; b; b = b->next){
			if(b->not_before - now < t) t = b->not_before - now;
		}
	}
	for(int i = 0; i <= s->npool; i++){
		const struct pgc *c = &s->conns[i];
		if(c->state == PGC_DOWN && c->retry_at - now < t) t = c->retry_at - now;
		if(c->state == PGC_CONNECTING && c->since + PG_CONNECT_TIMEOUT_MS - now < t) t = c->since + PG_CONNECT_TIMEOUT_MS - now;
	}
	if(s->maint->state == PGC_IDLE && s->maint->mstep == M_NONE && s->maint_at - now < t) t = s->maint_at - now;
	return t < 0 ? 0 : (int)t;
}

/* pg sink thread: nothing left to write */
static bool pg_sink__idle(const struct pg_sink *s)
{
	if(s->queue || (s->filling && s->filling->hi > s->filling->lo) || !s->drained || s->have_held) return false;
	for(int i = 0; i < s->npool; i++) if(s->conns[i].b) return false;
	return true;
}

/* pg sink thread */
static void *pg_sink_main(void *arg)
{
	struct pg_sink *s = arg;
	thread_background("iotpipe-pg");
	int n = s->npool + 1;
	struct pollfd *pfd = calloc((size_t)n, sizeof(*pfd));
	int *who = calloc((size_t)n, sizeof(*who));
	if(!pfd || !who){
		ip_log(IP_LOG_ERR, "iotpipe: pg sink: out of memory; the sink is stopped, its cursor stays");
		goto failed;
	}
	int64_t stop_at = 0;
	for(;;){
		int64_t now = clock_mono_ms();
		if(!stop_at && atomic_load(&s->stop)) stop_at = now + PG_STOP_MS;
		if(stop_at && (pg_sink__idle(s) || now >= stop_at)) break;
		pg_sink__read(s, now);
		pg_sink__dispatch(s, now, stop_at != 0);

		int np = 0;
		for(int i = 0; i < n; i++){
			struct pgc *c = &s->conns[i];
			if(c->state == PGC_DOWN || !c->pg || PQsocket(c->pg) < 0) continue;
			pfd[np].fd = PQsocket(c->pg);
			if(c->state == PGC_CONNECTING) pfd[np].events = c->events;
			else pfd[np].events = (short)(POLLIN | (c->want_write ? POLLOUT : 0));
			pfd[np].revents = 0;
			who[np++] = i;
		}
		int timeout = pg_sink__timeout(s, now);
		if(stop_at && timeout > 100) timeout = 100;
		int rc = poll(pfd, (nfds_t)np, timeout);
		if(rc < 0 && errno != EINTR){
			struct timespec ts = {0, 10 * 1000000L};
			nanosleep(&ts, NULL);
			continue;
		}
		now = clock_mono_ms();
		for(int k = 0; k < np && rc > 0; k++){
			struct pgc *c = &s->conns[who[k]];
			if(!pfd[k].revents) continue;
			if(c->state == PGC_CONNECTING){
				pgc_connect_poll(s, c, now);
			}else if(c->state == PGC_BUSY){
				pgc_pump(s, c, now);
			}else if(c->state == PGC_IDLE && !PQconsumeInput(c->pg)){
				char why[256];
				pg_conn_error(c->pg, why, sizeof(why));
				pgc_lost(s, c, now, why);
			}
		}
	}
failed:
	free(pfd);
	free(who);
	if(!pg_sink__idle(s)){
		ip_log(IP_LOG_NOTICE, "iotpipe: pg sink: stopping with batches unwritten; they are replayed from the outbox at "
				"the next start");
	}
	return NULL;
}

/* main thread, once the sink thread has stopped (or never started) */
static void pg_sink__free(struct pg_sink *s)
{
	if(!s) return;
	for(int i = 0; s->conns && i <= s->npool; i++){
		struct pgc *c = &s->conns[i];
		if(c->pg) PQfinish(c->pg);
		PQclear(c->tuples);
		pg_tuples_free(&c->scratch);
		free(c->sql);
	}
	for(int i = 0; s->batches && i < s->nbatches; i++){
		struct pg_batch *b = &s->batches[i];
		for(int t = 0; t < PG_T__COUNT; t++) pg_tuples_free(&b->rows[t]);
		free(b->days);
		free(b->rejects);
	}
	pg_inflight_free(&s->fl);
	free(s->conns);
	free(s->batches);
	free(s->conninfo);
	free(s->tscale_sql);
	free(s);
}

/* main thread */
struct pg_sink *pg_sink_start(const struct config *cfg, struct journal_reader *reader, struct metrics *m,
		char *err, size_t errlen)
{
	char why[256];
	if(!pg_conninfo_check(cfg->pg_conninfo, why, sizeof(why))){
		snprintf(err, errlen, "plugin_opt_pg_conninfo: %s", why);
		return NULL;
	}
	if(!reader){
		snprintf(err, errlen, "plugin_opt_pg_conninfo: no outbox reader for the PostgreSQL sink");
		return NULL;
	}
	struct pg_sink *s = calloc(1, sizeof(*s));
	if(!s) goto oom;
	s->npool = (int)cfg->pg_pool_size;
	s->batch_rows = (size_t)cfg->pg_batch_rows;
	s->flush_ms = cfg->pg_flush_ms;
	s->retention_ms = cfg->hot_retention_ms;
	if(cfg->hot_retention_ms < cfg->ts_max_age_ms){
		ip_log(IP_LOG_WARNING, "iotpipe: pg sink: plugin_opt_hot_retention (%.1f days) is shorter than "
				"plugin_opt_ts_max_age (%.1f days): readings older than the retention are still accepted, and "
				"their day's partition is made again for them and dropped at the next maintenance; set "
				"hot_retention to at least ts_max_age to keep them", (double)cfg->hot_retention_ms / PG_DAY_MS,
				(double)cfg->ts_max_age_ms / PG_DAY_MS);
	}
	/* compress what validation no longer accepts: late rows then never land in compressed chunks */
	s->compress_after_ms = cfg->ts_max_age_ms > PG_DAY_MS ? cfg->ts_max_age_ms : PG_DAY_MS;
	s->reader = reader;
	s->m = m;
	s->conninfo = strdup(cfg->pg_conninfo);
	s->nbatches = s->npool + 2;
	s->conns = calloc((size_t)s->npool + 1, sizeof(*s->conns));
	s->batches = calloc((size_t)s->nbatches, sizeof(*s->batches));
	s->tscale_sql = malloc(16384);
	if(!s->conninfo || !s->conns || !s->batches || !s->tscale_sql
			|| !pg_inflight_init(&s->fl, (size_t)s->nbatches, journal_reader_committed(reader))){
		goto oom;
	}
	if(!pg_schema_timescale_sql(s->retention_ms, 0, s->compress_after_ms, s->tscale_sql, 16384)) goto oom;
	for(int i = 0; i <= s->npool; i++){
		s->conns[i].id = i;
		s->conns[i].maint = i == s->npool;
	}
	s->maint = &s->conns[s->npool];
	for(int i = 0; i < s->nbatches; i++){
		for(int t = 0; t < PG_T__COUNT; t++) pg_tuples_init(&s->batches[i].rows[t]);
	}
	s->committed = s->next_lo = journal_reader_committed(reader);
	s->layout = PG_LAYOUT_PARTITIONED;

	int e = thread_start(&s->thread, pg_sink_main, s);
	if(e){
		snprintf(err, errlen, "plugin_opt_pg_conninfo: cannot start the PostgreSQL sink thread");
		pg_sink__free(s);
		return NULL;
	}
	ip_log(IP_LOG_INFO, "iotpipe: pg sink: started (%d connections, batches of %zu rows or %" PRId64 " ms)",
			s->npool, s->batch_rows, s->flush_ms);
	return s;
oom:
	snprintf(err, errlen, "out of memory");
	pg_sink__free(s);
	return NULL;
}

/* main thread */
void pg_sink_stop(struct pg_sink *s)
{
	if(!s) return;
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	pg_sink__free(s);
}
