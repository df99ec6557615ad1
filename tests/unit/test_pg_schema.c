#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_copy.h"
#include "pg_schema.h"

/* 2024-01-05T00:00:00Z */
#define JAN5_MS 1704412800000LL
#define DAY PG_DAY_MS

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if(!f) return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	if(b && fread(b, 1, (size_t)n, f) != (size_t)n){
		free(b);
		b = NULL;
	}
	if(b) b[n] = '\0';
	fclose(f);
	return b;
}

/* conf/schema.sql is what the plugin applies: the same text, byte for byte */
static void test_schema_file_matches(void **state)
{
	(void)state;
	char *file = slurp(IOTPIPE_SOURCE_DIR "/conf/schema.sql");
	assert_non_null(file);
	size_t nb = strlen(pg_schema_base_sql());
	assert_int_equal(strlen(file), nb + strlen(pg_schema_hot_sql()));
	assert_memory_equal(file, pg_schema_base_sql(), nb);
	assert_string_equal(file + nb, pg_schema_hot_sql());
	free(file);
}

static const char *sql_type(enum pg_coltype t)
{
	switch(t){
	case PG_C_TEXT: return "text";
	case PG_C_FLOAT8: return "double precision";
	case PG_C_TSTZ: return "timestamptz";
	case PG_C_BOOL: return "boolean";
	case PG_C_INT2: return "smallint";
	case PG_C_INT4: return "integer";
	case PG_C_INT8: return "bigint";
	default: return "bytea";
	}
}

/* the definition of table `name` in sql: from its CREATE TABLE to the closing line */
static char *table_def(const char *sql, const char *name)
{
	char head[128];
	snprintf(head, sizeof(head), "CREATE TABLE IF NOT EXISTS %s (\n", name);
	const char *p = strstr(sql, head);
	if(!p) return NULL;
	const char *end = strstr(p, "\n)");
	return end ? strndup(p, (size_t)(end - p)) : NULL;
}

/* Binary COPY needs every column's type to be the one the tuple encodes: the tables the schema
 * makes (both layouts) have exactly the sink's columns, in any order, with those types. */
static void check_columns(const char *sql)
{
	for(int t = 0; t < PG_T__COUNT; t++){
		char *def = table_def(sql, pg_tables[t].name);
		assert_non_null(def);
		size_t ncols = 0;
		for(const char *l = strchr(def, '\n'); l; l = strchr(l + 1, '\n')){
			if(l[1] == '\t' && strncmp(l + 2, "PRIMARY KEY", 11)) ncols++;
		}
		assert_int_equal(ncols, pg_tables[t].ncols);
		for(size_t i = 0; i < pg_tables[t].ncols; i++){
			char want[96];
			snprintf(want, sizeof(want), "\n\t%s %s", pg_tables[t].cols[i].name, sql_type(pg_tables[t].cols[i].type));
			if(!strstr(def, want)) fail_msg("%s: no \"%s\"", pg_tables[t].name, want + 2);
			assert_true(strstr(pg_tables[t].columns, pg_tables[t].cols[i].name) != NULL);
		}
		/* the ON CONFLICT target is the primary key */
		char key[128], inline_key[128];
		snprintf(key, sizeof(key), "\n\tPRIMARY KEY (%s)", pg_tables[t].key);
		snprintf(inline_key, sizeof(inline_key), "\n\t%s bigint PRIMARY KEY,", pg_tables[t].key);
		assert_true(strstr(def, key) || strstr(def, inline_key));
		free(def);
	}
}

static void test_schema_columns_match_copy(void **state)
{
	(void)state;
	char sql[65536];
	snprintf(sql, sizeof(sql), "%s%s", pg_schema_base_sql(), pg_schema_hot_sql());
	check_columns(sql);
	size_t n = (size_t)snprintf(sql, sizeof(sql), "%s", pg_schema_base_sql());
	assert_true(pg_schema_timescale_sql(7 * DAY, 0, DAY, sql + n, sizeof(sql) - n) > 0);
	check_columns(sql);
}

static void test_schema_pieces(void **state)
{
	(void)state;
	const char *hot = pg_schema_hot_sql();
	assert_non_null(strstr(hot, ") PARTITION BY RANGE (ts);\n"));
	assert_non_null(strstr(hot, "CREATE INDEX IF NOT EXISTS metrics_ts_brin ON metrics USING brin (ts);"));
	const char *base = pg_schema_base_sql();
	assert_non_null(strstr(base, "pg_notify('iotpipe_registry', TG_TABLE_NAME)"));
	assert_non_null(strstr(base, "CREATE OR REPLACE TRIGGER devices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices"));
	assert_non_null(strstr(base, "CREATE OR REPLACE TRIGGER sensors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sensors"));
	/* idempotent: nothing is created without IF NOT EXISTS or OR REPLACE */
	char sql[65536];
	snprintf(sql, sizeof(sql), "%s%s", base, hot);
	for(const char *p = strstr(sql, "CREATE "); p; p = strstr(p + 1, "CREATE ")){
		assert_true(!strncmp(p, "CREATE TABLE IF NOT EXISTS ", 27) || !strncmp(p, "CREATE INDEX IF NOT EXISTS ", 27)
				|| !strncmp(p, "CREATE OR REPLACE ", 18));
	}
	assert_string_equal(pg_schema_lock_sql(), "SELECT pg_advisory_xact_lock(29670554862285925)");
}

static void test_layout(void **state)
{
	(void)state;
	assert_int_equal(pg_schema_layout(false, 0), PG_LAYOUT_PARTITIONED);
	assert_int_equal(pg_schema_layout(true, 0), PG_LAYOUT_TIMESCALE);
	/* an existing table keeps its layout */
	assert_int_equal(pg_schema_layout(true, 'p'), PG_LAYOUT_PARTITIONED);
	assert_int_equal(pg_schema_layout(false, 'p'), PG_LAYOUT_PARTITIONED);
	assert_int_equal(pg_schema_layout(true, 'r'), PG_LAYOUT_TIMESCALE);
	assert_int_equal(pg_schema_layout(false, 'r'), PG_LAYOUT_PLAIN);
	assert_non_null(strstr(pg_schema_detect_sql(), "pg_extension WHERE extname = 'timescaledb'"));
	assert_non_null(strstr(pg_schema_detect_sql(), "pg_available_extensions WHERE name = 'timescaledb'"));
}

static void test_partition_names(void **state)
{
	(void)state;
	char name[32];
	int32_t day = pg_day_of_ms(JAN5_MS + 12 * 3600 * 1000);
	assert_int_equal(day, 19727);
	assert_true(pg_partition_name(day, name, sizeof(name)));
	assert_string_equal(name, "metrics_p20240105");
	int32_t back;
	assert_true(pg_partition_day("metrics_p20240105", &back));
	assert_int_equal(back, day);
	assert_true(pg_partition_day("metrics_p19700101", &back));
	assert_int_equal(back, 0);
	assert_true(pg_partition_day("metrics_p19691231", &back));
	assert_int_equal(back, -1);
	/* somebody else's tables */
	assert_false(pg_partition_day("metrics_p20240230", &back));
	assert_false(pg_partition_day("metrics_p2024010", &back));
	assert_false(pg_partition_day("metrics_p202401051", &back));
	assert_false(pg_partition_day("metrics_p2024010x", &back));
	assert_false(pg_partition_day("metrics_default", &back));
	assert_false(pg_partition_day("metrics_agg", &back));
	/* floor, not truncation, before 1970 */
	assert_int_equal(pg_day_of_ms(-1), -1);
	assert_int_equal(pg_day_of_ms(-DAY), -1);
	assert_int_equal(pg_day_of_ms(-DAY - 1), -2);
	assert_int_equal(pg_day_of_ms(0), 0);
	/* no partition for days a name cannot hold */
	assert_false(pg_partition_name(pg_day_of_ms(-40000LL * 365 * DAY), name, sizeof(name)));
	assert_false(pg_partition_name(day, name, 10));
}

static void test_partition_ddl(void **state)
{
	(void)state;
	char ddl[256];
	int32_t day = pg_day_of_ms(JAN5_MS);
	size_t n = pg_partition_ddl(day, ddl, sizeof(ddl));
	assert_int_equal(n, strlen(ddl));
	assert_string_equal(ddl, "CREATE TABLE IF NOT EXISTS metrics_p20240105 PARTITION OF metrics FOR VALUES "
			"FROM ('2024-01-05 00:00:00+00') TO ('2024-01-06 00:00:00+00')");
	/* month, leap day and year ends */
	pg_partition_ddl(pg_day_of_ms(JAN5_MS + 55 * DAY), ddl, sizeof(ddl));
	assert_string_equal(ddl, "CREATE TABLE IF NOT EXISTS metrics_p20240229 PARTITION OF metrics FOR VALUES "
			"FROM ('2024-02-29 00:00:00+00') TO ('2024-03-01 00:00:00+00')");
	pg_partition_ddl(pg_day_of_ms(JAN5_MS - 5 * DAY), ddl, sizeof(ddl));
	assert_string_equal(ddl, "CREATE TABLE IF NOT EXISTS metrics_p20231231 PARTITION OF metrics FOR VALUES "
			"FROM ('2023-12-31 00:00:00+00') TO ('2024-01-01 00:00:00+00')");
	assert_int_equal(pg_partition_ddl(day, ddl, 40), 0);
	assert_int_equal(pg_partition_ddl(pg_day_of_ms(-40000LL * 365 * DAY), ddl, sizeof(ddl)), 0);
}

static void test_retention_drops(void **state)
{
	(void)state;
	const char *names[] = {
		"metrics_p20240101", "metrics_p20240102", "metrics_p20240103", "metrics_p20240104",
		"metrics_p20240110", "metrics_p20240113", "metrics_default", "metrics_p20231231", "metrics_old", NULL,
	};
	size_t n = sizeof(names) / sizeof(names[0]), out[16];
	/* now 2024-01-10 12:00, 7 days: rows before 2024-01-03 12:00 are past it, so whole days up to the 2nd */
	int64_t now = JAN5_MS + 5 * DAY + 12 * 3600 * 1000;
	size_t k = pg_retention_drops(names, n, now, 7 * DAY, out);
	assert_int_equal(k, 3);
	assert_string_equal(names[out[0]], "metrics_p20240101");
	assert_string_equal(names[out[1]], "metrics_p20240102");
	assert_string_equal(names[out[2]], "metrics_p20231231");
	/* at midnight exactly, the day ending then goes too */
	k = pg_retention_drops(names, n, JAN5_MS + 5 * DAY, 7 * DAY, out);
	assert_int_equal(k, 3);
	k = pg_retention_drops(names, n, JAN5_MS + 6 * DAY, 7 * DAY, out);
	assert_int_equal(k, 4);
	assert_string_equal(names[out[2]], "metrics_p20240103");
	assert_int_equal(pg_retention_drops(names, n, JAN5_MS, 30 * DAY, out), 0);
	assert_non_null(strstr(pg_partitions_sql(), "i.inhparent = to_regclass('metrics')"));
}

static void test_timescale_sql(void **state)
{
	(void)state;
	char sql[16384];
	size_t n = pg_schema_timescale_sql(7 * DAY, 0, 7 * DAY, sql, sizeof(sql));
	assert_true(n > 0);
	assert_int_equal(n, strlen(sql));
	assert_non_null(strstr(sql, "CREATE TABLE IF NOT EXISTS metrics (\n\tdevice_id text NOT NULL,\n"));
	assert_null(strstr(sql, "PARTITION BY"));
	assert_non_null(strstr(sql, "SELECT create_hypertable('metrics', 'ts', chunk_time_interval => INTERVAL '86400 seconds', "
			"if_not_exists => TRUE);\n"));
	assert_non_null(strstr(sql, "SELECT create_hypertable('metrics_agg', 'window_start', chunk_time_interval => "
			"INTERVAL '604800 seconds', if_not_exists => TRUE);\n"));
	assert_non_null(strstr(sql, "\t\tALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = "
			"'device_id, sensor_id',\n\t\t\ttimescaledb.compress_orderby = 'ts DESC');\n"));
	assert_non_null(strstr(sql, "WHERE hypertable_schema = current_schema() AND hypertable_name = 'metrics') THEN"));
	assert_non_null(strstr(sql, "SELECT remove_compression_policy('metrics', if_exists => TRUE);\n"
			"SELECT add_compression_policy('metrics', INTERVAL '604800 seconds');\n"
			"SELECT remove_retention_policy('metrics', if_exists => TRUE);\n"
			"SELECT add_retention_policy('metrics', INTERVAL '604800 seconds');\n"));
	/* aggregates without a retention: the policy is removed and none added */
	assert_non_null(strstr(sql, "SELECT remove_retention_policy('metrics_agg', if_exists => TRUE);\n"));
	assert_null(strstr(sql, "add_retention_policy('metrics_agg'"));

	/* compression never earlier than a day; an aggregate retention when asked for */
	n = pg_schema_timescale_sql(2 * DAY, 400 * DAY, 1000, sql, sizeof(sql));
	assert_true(n > 0);
	assert_non_null(strstr(sql, "SELECT add_compression_policy('metrics', INTERVAL '86400 seconds');\n"));
	assert_non_null(strstr(sql, "SELECT add_retention_policy('metrics', INTERVAL '172800 seconds');\n"));
	assert_non_null(strstr(sql, "SELECT add_retention_policy('metrics_agg', INTERVAL '34560000 seconds');\n"));
	assert_int_equal(pg_schema_timescale_sql(7 * DAY, 0, DAY, sql, 200), 0);
}

static void test_errclass(void **state)
{
	(void)state;
	assert_int_equal(pg_errclass("23505", true), PG_E_UNIQUE);
	assert_int_equal(pg_errclass("23514", true), PG_E_DATA);          /* CHECK */
	assert_int_equal(pg_errclass("23514", false), PG_E_NO_PARTITION); /* no partition of relation found */
	assert_int_equal(pg_errclass("23502", true), PG_E_DATA);          /* NOT NULL */
	assert_int_equal(pg_errclass("23503", true), PG_E_DATA);          /* foreign key */
	assert_int_equal(pg_errclass("22021", false), PG_E_DATA);         /* bad encoding */
	assert_int_equal(pg_errclass("22008", false), PG_E_DATA);         /* timestamp out of range */
	assert_int_equal(pg_errclass("22P03", false), PG_E_SCHEMA);       /* a column of another type */
	assert_int_equal(pg_errclass("42P01", false), PG_E_SCHEMA);
	assert_int_equal(pg_errclass("42703", false), PG_E_SCHEMA);
	assert_int_equal(pg_errclass("40001", false), PG_E_TRANSIENT);
	assert_int_equal(pg_errclass("40P01", false), PG_E_TRANSIENT);
	assert_int_equal(pg_errclass("55P03", false), PG_E_TRANSIENT);
	assert_int_equal(pg_errclass("57P01", false), PG_E_TRANSIENT);
	assert_int_equal(pg_errclass("08006", false), PG_E_TRANSIENT);
	assert_int_equal(pg_errclass(NULL, false), PG_E_TRANSIENT);
	assert_int_equal(pg_errclass("", false), PG_E_TRANSIENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schema_file_matches),
		cmocka_unit_test(test_schema_columns_match_copy),
		cmocka_unit_test(test_schema_pieces),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_partition_names),
		cmocka_unit_test(test_partition_ddl),
		cmocka_unit_test(test_retention_drops),
		cmocka_unit_test(test_timescale_sql),
		cmocka_unit_test(test_errclass),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
