/* The PostgreSQL schema and the SQL the sink generates (see pg_schema.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg_schema.h"

/* One definition of each hot table's columns, shared by the partitioned and the TimescaleDB
 * layouts: the sink's COPY column lists (pg_copy.c) name exactly these. */
#define METRICS_COLUMNS \
	"\tdevice_id text NOT NULL,\n" \
	"\tsensor_id text NOT NULL,\n" \
	"\tts timestamptz NOT NULL,              -- the device's timestamp (arrival time when it sent none)\n" \
	"\tvalue double precision NOT NULL,      -- in the registry's unit when it names one\n" \
	"\tunit text,\n" \
	"\tlocation text,\n" \
	"\tzone text,\n" \
	"\tdevice_type text,\n" \
	"\tthreshold double precision,\n" \
	"\tis_anomaly boolean NOT NULL,\n" \
	"\tzscore double precision,\n" \
	"\tts_missing boolean NOT NULL,          -- no timestamp in the payload: ts is the arrival time\n" \
	"\tlate boolean NOT NULL,                -- after its window closed: stored, not aggregated\n" \
	"\tunenriched boolean NOT NULL,          -- the registry did not know the device\n" \
	"\tid bigint NOT NULL,                   -- the stable record id (lpad(to_hex(id), 16, '0') is its text form)\n" \
	"\tarrival timestamptz NOT NULL,         -- when the broker received it\n" \
	"\tPRIMARY KEY (device_id, sensor_id, ts)\n"

#define AGG_COLUMNS \
	"\tdevice_id text NOT NULL,\n" \
	"\tsensor_id text NOT NULL,\n" \
	"\twindow_start timestamptz NOT NULL,\n" \
	"\twindow_end timestamptz NOT NULL,\n" \
	"\tcount bigint NOT NULL,\n" \
	"\tavg double precision,\n" \
	"\tmin double precision,\n" \
	"\tmax double precision,\n" \
	"\tsum double precision,\n" \
	"\tfirst_ts timestamptz,\n" \
	"\tlast_ts timestamptz,\n" \
	"\tunit text,\n" \
	"\tlocation text,\n" \
	"\tzone text,\n" \
	"\tid bigint NOT NULL,\n" \
	"\tPRIMARY KEY (device_id, sensor_id, window_start)\n"

static const char base_sql[] =
	"-- iotpipe: the PostgreSQL schema (PostgreSQL 14 or later). The plugin applies it at start when\n"
	"-- plugin_opt_pg_conninfo is set; every statement is idempotent, so applying it by hand first\n"
	"-- (psql -f conf/schema.sql) is fine too. With the timescaledb extension installed in the database,\n"
	"-- the plugin makes metrics and metrics_agg hypertables instead of the second part below.\n"
	"\n"
	"-- The device registry, read by the plugin when plugin_opt_registry_file is unset. Changes reach\n"
	"-- the running broker through NOTIFY " PG_REGISTRY_CHANNEL ", no restart.\n"
	"CREATE TABLE IF NOT EXISTS devices (\n"
	"\tdevice_id text PRIMARY KEY,\n"
	"\tlocation text,\n"
	"\tzone text,\n"
	"\tdevice_type text\n"
	");\n"
	"CREATE TABLE IF NOT EXISTS sensors (\n"
	"\tdevice_id text NOT NULL REFERENCES devices (device_id) ON UPDATE CASCADE ON DELETE CASCADE,\n"
	"\tsensor_id text NOT NULL,\n"
	"\tordinal integer NOT NULL DEFAULT 0,   -- the device's lowest is its default sensor\n"
	"\tunit text,\n"
	"\tmin double precision,\n"
	"\tmax double precision,\n"
	"\tthreshold double precision,\n"
	"\tanomaly_z double precision,           -- NULL: plugin_opt_anomaly_z\n"
	"\tPRIMARY KEY (device_id, sensor_id)\n"
	");\n"
	"CREATE OR REPLACE FUNCTION iotpipe_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$\n"
	"BEGIN\n"
	"\tPERFORM pg_notify('" PG_REGISTRY_CHANNEL "', TG_TABLE_NAME);\n"
	"\tRETURN NULL;\n"
	"END\n"
	"$$;\n"
	"CREATE OR REPLACE TRIGGER devices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices\n"
	"\tFOR EACH STATEMENT EXECUTE FUNCTION iotpipe_registry_changed();\n"
	"CREATE OR REPLACE TRIGGER sensors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sensors\n"
	"\tFOR EACH STATEMENT EXECUTE FUNCTION iotpipe_registry_changed();\n"
	"\n"
	"-- Alerts and quarantined records; their key is the record's stable id.\n"
	"CREATE TABLE IF NOT EXISTS alerts (\n"
	"\tid bigint PRIMARY KEY,\n"
	"\tdevice_id text NOT NULL,\n"
	"\tsensor_id text NOT NULL,\n"
	"\tts timestamptz NOT NULL,\n"
	"\tkind text NOT NULL,                   -- threshold, zscore\n"
	"\tstate text NOT NULL,                  -- firing, resolved\n"
	"\tvalue double precision,\n"
	"\tlimit_value double precision,\n"
	"\tscore double precision,\n"
	"\tunit text,\n"
	"\tlocation text,\n"
	"\tzone text\n"
	");\n"
	"CREATE INDEX IF NOT EXISTS alerts_ts_brin ON alerts USING brin (ts);\n"
	"CREATE INDEX IF NOT EXISTS alerts_device_ts ON alerts (device_id, ts);\n"
	"CREATE TABLE IF NOT EXISTS quarantine (\n"
	"\tid bigint PRIMARY KEY,\n"
	"\treason text NOT NULL,                 -- malformed_payload, unknown_device, ... sink_rejected\n"
	"\tdetail text,\n"
	"\tdevice_id text,\n"
	"\tsensor_id text,\n"
	"\ttopic text,\n"
	"\tclient_id text,\n"
	"\tusername text,\n"
	"\tqos smallint,\n"
	"\tpayload bytea,                        -- as published (its head when truncated)\n"
	"\tpayload_bytes integer,                -- the size published\n"
	"\ttruncated boolean NOT NULL,\n"
	"\tarrival timestamptz NOT NULL\n"
	");\n"
	"CREATE INDEX IF NOT EXISTS quarantine_arrival_brin ON quarantine USING brin (arrival);\n";

static const char hot_sql[] =
	"\n"
	"-- The hot tier on plain PostgreSQL: readings partitioned by day (metrics_pYYYYMMDD, UTC days),\n"
	"-- made ahead and on demand by the plugin and dropped after plugin_opt_hot_retention.\n"
	"CREATE TABLE IF NOT EXISTS metrics (\n"
	METRICS_COLUMNS
	") PARTITION BY RANGE (ts);\n"
	"CREATE INDEX IF NOT EXISTS metrics_ts_brin ON metrics USING brin (ts);\n"
	"CREATE TABLE IF NOT EXISTS metrics_agg (\n"
	AGG_COLUMNS
	");\n"
	"CREATE INDEX IF NOT EXISTS metrics_agg_window_brin ON metrics_agg USING brin (window_start);\n";

/* any thread */
const char *pg_schema_base_sql(void)
{
	return base_sql;
}

/* any thread */
const char *pg_schema_hot_sql(void)
{
	return hot_sql;
}

/* any thread */
enum pg_layout pg_schema_layout(bool timescale_installed, char metrics_relkind)
{
	if(metrics_relkind == 'p') return PG_LAYOUT_PARTITIONED;
	if(metrics_relkind == 0) return timescale_installed ? PG_LAYOUT_TIMESCALE : PG_LAYOUT_PARTITIONED;
	/* an existing ordinary table: a hypertable when TimescaleDB is there (create_hypertable is
	 * idempotent and refuses a table with rows that is not one), else someone's own table */
	return timescale_installed ? PG_LAYOUT_TIMESCALE : PG_LAYOUT_PLAIN;
}

/* any thread */
const char *pg_layout_name(enum pg_layout l)
{
	switch(l){
	case PG_LAYOUT_PARTITIONED: return "partitioned by day";
	case PG_LAYOUT_TIMESCALE: return "TimescaleDB hypertable";
	default: return "plain table";
	}
}

/* one hypertable with its policies; the compression settings only when not set yet, since
 * TimescaleDB refuses to change them once chunks are compressed */
static size_t timescale_table(char *buf, size_t cap, const char *table, const char *columns, const char *time_col,
		int64_t chunk_s, int64_t retention_ms, int64_t compress_after_ms)
{
	int n = snprintf(buf, cap,
		"CREATE TABLE IF NOT EXISTS %s (\n%s);\n"
		"SELECT create_hypertable('%s', '%s', chunk_time_interval => INTERVAL '%" PRId64 " seconds', "
		"if_not_exists => TRUE);\n"
		"DO $$\nBEGIN\n"
		"\tIF NOT (SELECT compression_enabled FROM timescaledb_information.hypertables\n"
		"\t\t\tWHERE hypertable_schema = current_schema() AND hypertable_name = '%s') THEN\n"
		"\t\tALTER TABLE %s SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id, sensor_id',\n"
		"\t\t\ttimescaledb.compress_orderby = '%s DESC');\n"
		"\tEND IF;\n"
		"END\n$$;\n"
		"SELECT remove_compression_policy('%s', if_exists => TRUE);\n"
		"SELECT add_compression_policy('%s', INTERVAL '%" PRId64 " seconds');\n"
		"SELECT remove_retention_policy('%s', if_exists => TRUE);\n",
		table, columns, table, time_col, chunk_s, table, table, time_col, table, table,
		compress_after_ms / 1000, table);
	if(n < 0 || (size_t)n >= cap) return 0;
	size_t len = (size_t)n;
	if(retention_ms > 0){
		n = snprintf(buf + len, cap - len, "SELECT add_retention_policy('%s', INTERVAL '%" PRId64 " seconds');\n",
				table, retention_ms / 1000);
		if(n < 0 || (size_t)n >= cap - len) return 0;
		len += (size_t)n;
	}
	return len;
}

/* any thread */
size_t pg_schema_timescale_sql(int64_t metrics_retention_ms, int64_t agg_retention_ms, int64_t compress_after_ms,
		char *buf, size_t cap)
{
	if(compress_after_ms < PG_DAY_MS) compress_after_ms = PG_DAY_MS;
	int n = snprintf(buf, cap,
		"\n-- The hot tier on TimescaleDB: hypertables with compression and retention policies.\n");
	if(n < 0 || (size_t)n >= cap) return 0;
	size_t len = (size_t)n;
	size_t k = timescale_table(buf + len, cap - len, "metrics", METRICS_COLUMNS, "ts", PG_DAY_MS / 1000,
			metrics_retention_ms, compress_after_ms);
	if(!k) return 0;
	len += k;
	k = timescale_table(buf + len, cap - len, "metrics_agg", AGG_COLUMNS, "window_start", 7 * PG_DAY_MS / 1000,
			agg_retention_ms, compress_after_ms);
	if(!k) return 0;
	return len + k;
}

/* any thread */
const char *pg_schema_detect_sql(void)
{
	return "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
		"(SELECT relkind FROM pg_class WHERE oid = to_regclass('metrics')), "
		"EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')";
}

/* any thread */
const char *pg_schema_lock_sql(void)
{
	/* 'iotpipe' in ASCII: one key for every schema change made by any iotpipe */
	return "SELECT pg_advisory_xact_lock(29670554862285925)";
}

/* any thread */
const char *pg_partitions_sql(void)
{
	return "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
		"WHERE i.inhparent = to_regclass('metrics')";
}

/* any thread */
int32_t pg_day_of_ms(int64_t ms)
{
	int64_t d = ms / PG_DAY_MS;
	if(ms % PG_DAY_MS < 0) d--;
	if(d > INT32_MAX) return INT32_MAX;
	if(d < INT32_MIN) return INT32_MIN;
	return (int32_t)d;
}

/* any thread */
static bool day_tm(int32_t day, struct tm *tm)
{
	time_t t = (time_t)day * 86400;
	if(!gmtime_r(&t, tm)) return false;
	return tm->tm_year + 1900 >= 1000 && tm->tm_year + 1900 <= 9999;
}

/* any thread */
bool pg_partition_name(int32_t day, char *buf, size_t cap)
{
	struct tm tm;
	if(!day_tm(day, &tm)) return false;
	int n = snprintf(buf, cap, "metrics_p%04d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
	return n > 0 && (size_t)n < cap;
}

/* any thread */
bool pg_partition_day(const char *name, int32_t *day)
{
	static const char prefix[] = "metrics_p";
	size_t pl = sizeof(prefix) - 1;
	if(strncmp(name, prefix, pl) || strlen(name) != pl + 8) return false;
	int v[3] = {0, 0, 0};
	static const int width[3] = {4, 2, 2};
	const char *p = name + pl;
	for(int f = 0; f < 3; f++){
		for(int i = 0; i < width[f]; i++, p++){
			if(*p < '0' || *p > '9') return false;
			v[f] = v[f] * 10 + (*p - '0');
		}
	}
	struct tm tm = {.tm_year = v[0] - 1900, .tm_mon = v[1] - 1, .tm_mday = v[2]};
	time_t t = timegm(&tm);
	int32_t d = (int32_t)(t >= 0 ? t / 86400 : (t - 86399) / 86400);
	/* only a real date names it: metrics_p20240230 is someone else's table */
	char back[32];
	if(!pg_partition_name(d, back, sizeof(back)) || strcmp(back, name)) return false;
	*day = d;
	return true;
}

/* any thread */
size_t pg_partition_ddl(int32_t day, char *buf, size_t cap)
{
	struct tm a, b;
	char name[32];
	if(!pg_partition_name(day, name, sizeof(name)) || !day_tm(day, &a) || !day_tm(day + 1, &b)) return 0;
	/* bounds with an explicit +00: the session's TimeZone must not move a UTC day */
	int n = snprintf(buf, cap, "CREATE TABLE IF NOT EXISTS %s PARTITION OF metrics FOR VALUES "
			"FROM ('%04d-%02d-%02d 00:00:00+00') TO ('%04d-%02d-%02d 00:00:00+00')", name,
			a.tm_year + 1900, a.tm_mon + 1, a.tm_mday, b.tm_year + 1900, b.tm_mon + 1, b.tm_mday);
	if(n < 0 || (size_t)n >= cap) return 0;
	return (size_t)n;
}

/* any thread */
size_t pg_retention_drops(const char *const *names, size_t n, int64_t now_ms, int64_t retention_ms, size_t *out)
{
	size_t k = 0;
	int64_t horizon = now_ms - retention_ms;
	for(size_t i = 0; i < n; i++){
		int32_t day;
		if(!names[i] || !pg_partition_day(names[i], &day)) continue;
		/* the day's last instant must be past the horizon: no row in it is still within retention */
		if(((int64_t)day + 1) * PG_DAY_MS <= horizon) out[k++] = i;
	}
	return k;
}

/* any thread */
enum pg_errclass pg_errclass(const char *sqlstate, bool has_constraint)
{
	if(!sqlstate || strlen(sqlstate) != 5) return PG_E_TRANSIENT;
	if(!strcmp(sqlstate, "23505")) return PG_E_UNIQUE;
	/* a CHECK violation names its constraint; tuple routing finding no partition names none */
	if(!strcmp(sqlstate, "23514") && !has_constraint) return PG_E_NO_PARTITION;
	/* the sink's binary tuples are well-formed for the columns it expects: a column of another type */
	if(!strcmp(sqlstate, "22P03")) return PG_E_SCHEMA;
	if(sqlstate[0] == '2' && (sqlstate[1] == '2' || sqlstate[1] == '3')) return PG_E_DATA;
	if(sqlstate[0] == '4' && sqlstate[1] == '2') return PG_E_SCHEMA;
	return PG_E_TRANSIENT;
}
