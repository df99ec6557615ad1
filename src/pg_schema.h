/* The SQL the PostgreSQL side of iotpipe runs, as text built by pure functions (unit-tested
 * without a server): the schema (conf/schema.sql is exactly pg_schema_base_sql() followed by
 * pg_schema_hot_sql()), the day partitions of `metrics` and their retention, the TimescaleDB
 * variant, and how an error's SQLSTATE decides what the sink does next. */
#ifndef IOTPIPE_PG_SCHEMA_H
#define IOTPIPE_PG_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_DAY_MS 86400000LL
/* partitions made ahead of time: today and the next PG_DAYS_AHEAD days */
#define PG_DAYS_AHEAD 3
/* what LISTEN/NOTIFY carries registry changes on */
#define PG_REGISTRY_CHANNEL "iotpipe_registry"

/* How `metrics` is laid out in the database the sink writes to. */
enum pg_layout {
	PG_LAYOUT_PARTITIONED,      /* range-partitioned by day, partitions made and dropped by the sink */
	PG_LAYOUT_TIMESCALE,        /* a hypertable: chunks, retention and compression are TimescaleDB's */
	PG_LAYOUT_PLAIN,            /* an ordinary table someone else made: written to, never partitioned */
};

/* timescaledb installed in the database (pg_extension), and the relkind of an existing `metrics`
 * (0 when there is none): the layout to use. An existing table keeps its layout. */
enum pg_layout pg_schema_layout(bool timescale_installed, char metrics_relkind);
const char *pg_layout_name(enum pg_layout l);

/* devices, sensors (with the NOTIFY triggers), alerts, quarantine */
const char *pg_schema_base_sql(void);
/* metrics (partitioned by day, BRIN on ts) and metrics_agg, on plain PostgreSQL */
const char *pg_schema_hot_sql(void);
/* metrics and metrics_agg as hypertables with compression and retention policies, for when the
 * timescaledb extension is installed. retention 0: no retention policy. Returns the length, 0 when
 * cap is too small. */
size_t pg_schema_timescale_sql(int64_t metrics_retention_ms, int64_t agg_retention_ms, int64_t compress_after_ms,
		char *buf, size_t cap);
/* what detects the layout: one row (timescaledb's version or NULL, metrics' relkind or NULL,
 * whether timescaledb is available to install) */
const char *pg_schema_detect_sql(void);
/* taken first by every transaction that changes the schema, so that several sinks (or brokers)
 * never race on the catalog */
const char *pg_schema_lock_sql(void);

/* days since the epoch, UTC, floored */
int32_t pg_day_of_ms(int64_t ms);
/* false when the day cannot have a partition (before year 1000 or after 9999) */
bool pg_partition_name(int32_t day, char *buf, size_t cap);
/* the day of a partition made by pg_partition_name; false for any other name */
bool pg_partition_day(const char *name, int32_t *day);
/* CREATE TABLE IF NOT EXISTS metrics_pYYYYMMDD PARTITION OF metrics FOR VALUES FROM .. TO ..;
 * the length, 0 when the day cannot have a partition or cap is too small */
size_t pg_partition_ddl(int32_t day, char *buf, size_t cap);
/* the partitions among names[0..n) whose whole day is older than now - retention: their indexes
 * go to out (n at most), returns how many */
size_t pg_retention_drops(const char *const *names, size_t n, int64_t now_ms, int64_t retention_ms, size_t *out);
/* the partitions of metrics, one name per row */
const char *pg_partitions_sql(void);

/* What an error tells the sink to do. */
enum pg_errclass {
	PG_E_UNIQUE,                /* 23505: redo the batch through the staging table, ON CONFLICT DO NOTHING */
	PG_E_DATA,                  /* a row's data (class 22, class 23 but 23505): isolate it, quarantine it */
	PG_E_NO_PARTITION,          /* no partition for a row: make it and retry */
	PG_E_SCHEMA,                /* the tables are not what the sink writes (class 42, 22P03): re-apply, retry */
	PG_E_TRANSIENT,             /* anything else (serialization, deadlock, locks, resources): retry */
};

/* sqlstate may be NULL (a libpq-side failure). has_constraint: the error names a constraint
 * (PG_DIAG_CONSTRAINT_NAME), which tells a CHECK violation from "no partition found for row". */
enum pg_errclass pg_errclass(const char *sqlstate, bool has_constraint);

#endif
