/* The PostgreSQL sink's pure parts: output records as tuples of PostgreSQL's binary COPY format
 * (one table per record kind), and the bookkeeping its event loop runs on: which rows of a batch
 * to try next when the server rejects one of them (bisect), and how far the outbox cursor may move
 * while several batches are in flight. No I/O here: all of it is unit-tested without a server. */
#ifndef IOTPIPE_PG_COPY_H
#define IOTPIPE_PG_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"

enum pg_table_id {
	PG_T_METRICS,               /* enriched readings */
	PG_T_ALERTS,
	PG_T_QUARANTINE,
	PG_T_AGG,                   /* window aggregates */
	PG_T__COUNT
};

enum pg_coltype { PG_C_TEXT, PG_C_FLOAT8, PG_C_TSTZ, PG_C_BOOL, PG_C_INT2, PG_C_INT4, PG_C_INT8, PG_C_BYTEA };

struct pg_column {
	const char *name;
	enum pg_coltype type;
};

struct pg_table {
	const char *name;           /* the target table */
	const char *stage;          /* the per-connection temp table replays go through */
	const char *key;            /* the natural key: the ON CONFLICT target */
	const char *columns;        /* the COPY column list, in tuple order */
	size_t ncols;
	const struct pg_column *cols;
};

extern const struct pg_table pg_tables[PG_T__COUNT];

/* the table of an outbox record kind; -1 when the kind is not stored in PostgreSQL (raw) */
int pg_table_of_kind(uint16_t kind);

#define PG_COPY_HEADER_LEN 19
#define PG_COPY_TRAILER_LEN 2
extern const uint8_t pg_copy_header[PG_COPY_HEADER_LEN];
extern const uint8_t pg_copy_trailer[PG_COPY_TRAILER_LEN];

/* PostgreSQL's timestamp: microseconds since 2000-01-01 UTC. Out of range ms give a value the
 * server refuses (a data error for that row), never a wrapped one. */
int64_t pg_time_from_ms(int64_t ms);
int64_t pg_time_to_ms(int64_t pgtime);

/* Encoded tuples of one table, back to back, with where each starts and the outbox LSN it came
 * from. Rows [lo, hi) are contiguous bytes: a range goes to the server in one piece. */
struct pg_tuples {
	uint8_t *buf;
	size_t len, cap;
	size_t *off;
	uint64_t *lsn;
	size_t n, ncap;
};

void pg_tuples_init(struct pg_tuples *t);
void pg_tuples_reset(struct pg_tuples *t);
void pg_tuples_free(struct pg_tuples *t);
/* appends r as a tuple of its table (pg_table_of_kind(r->kind) must be >= 0); false: out of memory */
bool pg_tuples_add(struct pg_tuples *t, const struct outrec *r, uint64_t lsn);
/* the bytes of rows [lo, hi) */
const uint8_t *pg_tuples_span(const struct pg_tuples *t, size_t lo, size_t hi, size_t *len);

/* One field of an encoded tuple: false when the column is NULL, absent, or the tuple malformed. */
bool pg_tuple_field(const uint8_t *tup, size_t len, size_t col, const uint8_t **val, size_t *vlen);
/* column index by name in table t, -1 if none */
int pg_table_column(enum pg_table_id t, const char *name);

/* A tuple of table t as one JSON object (what a rejected row's quarantine payload holds).
 * Returns the length, 0 when cap is too small or the tuple malformed. */
size_t pg_tuple_json(enum pg_table_id t, const uint8_t *tup, size_t len, char *out, size_t cap);

/* Appends to q (a quarantine table's tuples) the sink_rejected row for a tuple of table t that the
 * server refused with `why`. minimal: only the id, reason, detail and payload, for when even the
 * full quarantine row was refused (its device id may be what the server objects to). */
bool pg_tuples_add_reject(struct pg_tuples *q, enum pg_table_id t, const uint8_t *tup, size_t len,
		uint64_t lsn, const char *why, int64_t now_ms, bool minimal);

/* Bisecting a batch the server refused for one row's data: ranges are tried depth first, lower
 * half first; a failed range is split, a failed single row is the bad one. k bad rows among n cost
 * about 2k log2(n) attempts; no bad row costs one. */
#define PG_BISECT_DEPTH 64
struct pg_bisect {
	size_t lo[PG_BISECT_DEPTH], hi[PG_BISECT_DEPTH];
	int n;
};

void pg_bisect_init(struct pg_bisect *b, size_t lo, size_t hi);
/* the range to try next; false when everything is done */
bool pg_bisect_next(const struct pg_bisect *b, size_t *lo, size_t *hi);
/* the outcome of the range pg_bisect_next gave. true when that range was a single row that
 * failed: *bad is that row (it is done with: the caller quarantines it). */
bool pg_bisect_result(struct pg_bisect *b, bool ok, size_t *bad);
/* ranges still to try */
int pg_bisect_pending(const struct pg_bisect *b);

/* Batches in flight, in LSN order. A batch is pushed when closed (its records end before hi) and
 * marked done when its transaction committed; the cursor may move to the hi of the last batch
 * such that it and every batch before it are done. */
struct pg_inflight {
	uint64_t *hi;
	bool *done;
	size_t cap;
	uint64_t head, tail;        /* sequence numbers: [head, tail) are in flight */
	uint64_t committed;         /* the cursor: every record below it is written */
};

bool pg_inflight_init(struct pg_inflight *f, size_t cap, uint64_t committed);
void pg_inflight_free(struct pg_inflight *f);
bool pg_inflight_full(const struct pg_inflight *f);
/* a closed batch ending before hi; returns its sequence number */
uint64_t pg_inflight_push(struct pg_inflight *f, uint64_t hi);
/* that batch committed; returns the cursor (unchanged unless it was the oldest in flight) */
uint64_t pg_inflight_done(struct pg_inflight *f, uint64_t seq);

#endif
