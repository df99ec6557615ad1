/* The registry from PostgreSQL: the cache's JSON round trip, then the loader against a live
 * PostgreSQL 15 (started with ci/pg.sh when running as root with PostgreSQL installed, or the one in
 * IOTPIPE_TEST_PG; skipped otherwise): the first load, NOTIFY reloads, invalid rows, the cache used
 * while the server is down, an empty devices table. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_schema.h"
#include "pgreg.h"
#include "registry.h"
#include "regwatch.h"

#include "pg_live.h"
#include "wait.h"

#define DEADLINE_MS 20000

static void test_json_round_trip(void **state)
{
	(void)state;
	char err[256];
	struct ip_registry *r = registry_new();
	struct ip_device_info *d = registry_add_device(r, "temp-007", "Berlin", "z1", "thermometer", err, sizeof(err));
	assert_non_null(d);
	struct ip_sensor_info s;
	registry_sensor_init(&s);
	strcpy(s.sensor_id, "temp");
	strcpy(s.unit, "Cel");
	s.min = -50.5;
	s.max = 150;
	s.threshold = 25.125;
	s.anomaly_z = 3;
	assert_true(registry_add_sensor(d, &s, err, sizeof(err)));
	registry_sensor_init(&s);
	strcpy(s.sensor_id, "hum");
	s.max = 0.1;
	assert_true(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_non_null(registry_add_device(r, "any", NULL, "z\"2", NULL, err, sizeof(err)));
	registry_seal(r);

	char *json = pgreg_to_json(r);
	assert_non_null(json);
	struct ip_registry *back;
	assert_true(registry_parse_json(json, strlen(json), &back, err, sizeof(err)));
	assert_int_equal(registry_count(back), 2);
	const struct ip_device_info *b = registry_find(back, "temp-007");
	assert_non_null(b);
	assert_string_equal(b->location, "Berlin");
	assert_string_equal(b->device_type, "thermometer");
	assert_int_equal(b->nsensors, 2);
	assert_string_equal(b->sensors[0].sensor_id, "temp");
	assert_string_equal(b->sensors[0].unit, "Cel");
	assert_true(b->sensors[0].min == -50.5 && b->sensors[0].max == 150);
	assert_true(b->sensors[0].threshold == 25.125 && b->sensors[0].anomaly_z == 3);
	assert_string_equal(b->sensors[1].sensor_id, "hum");
	assert_true(isinf(b->sensors[1].min) && b->sensors[1].max == 0.1 && isnan(b->sensors[1].threshold));
	assert_true(b->sensors[1].anomaly_z == 0);
	const struct ip_device_info *a = registry_find(back, "any");
	assert_non_null(a);
	assert_true(a->any_sensor);
	assert_null(a->location);
	assert_string_equal(a->zone, "z\"2");
	free(json);
	registry_free(r);
	registry_free(back);
	assert_non_null(strstr(pgreg_load_sql(), "ORDER BY d.device_id, s.ordinal, s.sensor_id"));
}

/* --- live --------------------------------------------------------------------------------------- */

/* a fresh database with the schema; its conninfo into out */
static PGconn *new_db(char *out, size_t cap)
{
	char admin[600], q[64];
	snprintf(admin, sizeof(admin), "%s dbname=postgres", pg_base);
	PGconn *a = PQconnectdb(admin);
	if(PQstatus(a) != CONNECTION_OK) fail_msg("%s", PQerrorMessage(a));
	snprintf(q, sizeof(q), "CREATE DATABASE r%d_%d", (int)getpid(), ++dbseq);
	sql(a, q);
	PQfinish(a);
	snprintf(out, cap, "%s dbname=r%d_%d", pg_base, (int)getpid(), dbseq);
	PGconn *c = PQconnectdb(out);
	if(PQstatus(c) != CONNECTION_OK) fail_msg("%s", PQerrorMessage(c));
	sql(c, "SET client_min_messages = warning");
	sql(c, pg_schema_base_sql());
	return c;
}

/* the newest snapshot, as the processor sees it */
static const struct ip_registry *current(struct pgreg *g)
{
	return regslot_take(pgreg_slot(g));
}

static const char *location_of(struct pgreg *g, const char *dev)
{
	const struct ip_registry *r = current(g);
	const struct ip_device_info *d = r ? registry_find(r, dev) : NULL;
	return d && d->location ? d->location : "";
}

static void test_live_load_and_notify(void **state)
{
	(void)state;
	if(!pg_base[0]) skip();
	char conninfo[700], cache[128], err[512];
	PGconn *db = new_db(conninfo, sizeof(conninfo));
	snprintf(cache, sizeof(cache), "/tmp/iotpipe-test-pgreg-%d.json", (int)getpid());
	unlink(cache);
	sql(db, "INSERT INTO devices VALUES ('d1', 'Berlin', 'z1', 'thermometer'), ('d2', NULL, NULL, NULL), "
			"('bad', 'x', NULL, NULL), ('bad/id', 'x', NULL, NULL)");
	/* listed out of order: ordinal decides the default sensor */
	sql(db, "INSERT INTO sensors VALUES ('d1', 'hum', 1, '%RH', 0, 100, NULL, NULL), "
			"('d1', 'temp', 0, 'Cel', -50, 150, 25, 3), ('bad', 's', 0, NULL, 10, 5, NULL, NULL)");

	struct pgreg *g = pgreg_start(conninfo, cache, 5000, err, sizeof(err));
	assert_non_null(g);
	/* the first load happened within pgreg_start: a message right after start is enriched */
	const struct ip_registry *r = current(g);
	assert_non_null(r);
	assert_int_equal(registry_count(r), 2);
	const struct ip_device_info *d1 = registry_find(r, "d1");
	assert_non_null(d1);
	assert_string_equal(d1->zone, "z1");
	assert_int_equal(d1->nsensors, 2);
	assert_string_equal(d1->sensors[0].sensor_id, "temp");
	assert_true(d1->sensors[0].threshold == 25 && d1->sensors[0].anomaly_z == 3 && d1->sensors[0].min == -50);
	assert_true(isnan(d1->sensors[1].threshold) && d1->sensors[1].anomaly_z == 0);
	const struct ip_device_info *d2 = registry_find(r, "d2");
	assert_non_null(d2);
	assert_true(d2->any_sensor);
	assert_null(registry_find(r, "bad"));        /* min > max: left out whole */
	assert_null(registry_find(r, "bad/id"));
	struct pgreg_stats st;
	pgreg_stats(g, &st);
	assert_int_equal(st.loads, 1);
	assert_int_equal(st.skipped, 2);

	/* a change is in use without a restart */
	int64_t t0 = clock_mono_ms();
	sql(db, "UPDATE devices SET location = 'Paris' WHERE device_id = 'd1'");
	WAIT_FOR(!strcmp(location_of(g, "d1"), "Paris"));
	fprintf(stderr, "test_pgreg: an UPDATE was in use after %lld ms\n", (long long)(clock_mono_ms() - t0));
	sql(db, "INSERT INTO devices VALUES ('d3', 'Lyon', NULL, NULL)");
	WAIT_FOR(!strcmp(location_of(g, "d3"), "Lyon"));
	sql(db, "UPDATE sensors SET threshold = 40 WHERE device_id = 'd1' AND sensor_id = 'temp'");
	WAIT_FOR(registry_find(current(g), "d1")->sensors[0].threshold == 40);
	sql(db, "DELETE FROM devices WHERE device_id = 'd2'");
	WAIT_FOR(registry_find(current(g), "d2") == NULL);
	/* many changes at once are read once or a few times, not once each */
	pgreg_stats(g, &st);
	uint64_t loads = st.loads;
	sql(db, "BEGIN");
	for(int i = 0; i < 50; i++){
		char q[128];
		snprintf(q, sizeof(q), "INSERT INTO devices VALUES ('m%d', NULL, NULL, NULL)", i);
		sql(db, q);
	}
	sql(db, "COMMIT");
	WAIT_FOR(registry_count(current(g)) == 52);   /* d1, d3 and m0..m49 */
	pgreg_stats(g, &st);
	assert_true(st.loads - loads <= 2);
	/* SIGHUP */
	pgreg_request_reload(g);
	WAIT_FOR((pgreg_stats(g, &st), st.loads > loads + 1 || st.loads >= loads + 2));

	/* the cache holds the newest snapshot */
	struct ip_registry *cached;
	WAIT_FOR(registry_load_file(cache, &cached, err, sizeof(err)) && (registry_count(cached) == 52 || (registry_free(cached), false)));
	assert_string_equal(registry_find(cached, "d1")->location, "Paris");
	registry_free(cached);
	pgreg_stop(g);

	/* down at start: the cached copy is in use at once, the tables when the server is back */
	if(pg_dir[0]){
		assert_true(run_cmd("bash '%s/ci/pg.sh' stop %s >/dev/null", IOTPIPE_SOURCE_DIR, pg_dir));
		g = pgreg_start(conninfo, cache, 1000, err, sizeof(err));
		assert_non_null(g);
		r = current(g);
		assert_non_null(r);
		assert_int_equal(registry_count(r), 52);
		assert_string_equal(location_of(g, "d1"), "Paris");
		assert_true(run_cmd("bash '%s/ci/pg.sh' start %s %d >/dev/null", IOTPIPE_SOURCE_DIR, pg_dir, pg_port));
		PQfinish(db);
		db = PQconnectdb(conninfo);
		sql(db, "UPDATE devices SET location = 'Rome' WHERE device_id = 'd1'");
		WAIT_FOR(!strcmp(location_of(g, "d1"), "Rome"));
		pgreg_stats(g, &st);
		assert_true(st.failures > 0);
		pgreg_stop(g);
	}
	unlink(cache);
	PQfinish(db);
}

/* A change committed while a load reads its rows: the load's snapshot may miss it, and its NOTIFY
 * arrives in the middle of the load's reply. It must still lead to a reload, not wait for the next
 * change. Enough devices that a load takes a while; the second UPDATE lands at varying points of the
 * load the first one started. */
static void test_live_change_during_load(void **state)
{
	(void)state;
	if(!pg_base[0]) skip();
	char conninfo[700], err[512];
	PGconn *db = new_db(conninfo, sizeof(conninfo));
	sql(db, "INSERT INTO devices SELECT 'n' || i, 'x', NULL, NULL FROM generate_series(1, 20000) i");
	sql(db, "INSERT INTO devices VALUES ('d', 'start', NULL, NULL)");
	struct pgreg *g = pgreg_start(conninfo, NULL, 5000, err, sizeof(err));
	assert_non_null(g);
	assert_string_equal(location_of(g, "d"), "start");
	int64_t t0 = clock_mono_ms();
	sql(db, "UPDATE devices SET location = 'timed' WHERE device_id = 'd'");
	WAIT_FOR(!strcmp(location_of(g, "d"), "timed"));
	int64_t load_ms = clock_mono_ms() - t0;   /* debounce + one load, roughly */
	fprintf(stderr, "test_pgreg: a change to 20,001 devices was in use after %lld ms\n", (long long)load_ms);
	for(int i = 0; i < 20; i++){
		char q[160], want[32];
		sql(db, "UPDATE devices SET location = 'first' WHERE device_id = 'd'");
		nap_ms(load_ms * i / 20);
		snprintf(want, sizeof(want), "second %d", i);
		snprintf(q, sizeof(q), "UPDATE devices SET location = '%s' WHERE device_id = 'd'", want);
		sql(db, q);
		WAIT_FOR(!strcmp(location_of(g, "d"), want));
	}
	pgreg_stop(g);
	PQfinish(db);
}

/* No devices: no registry (devices pass unenriched), until the first row. */
static void test_live_empty(void **state)
{
	(void)state;
	if(!pg_base[0]) skip();
	char conninfo[700], err[512];
	PGconn *db = new_db(conninfo, sizeof(conninfo));
	struct pgreg *g = pgreg_start(conninfo, NULL, 5000, err, sizeof(err));
	assert_non_null(g);
	nap_ms(200);
	assert_null(current(g));
	sql(db, "INSERT INTO devices VALUES ('x', 'Oslo', NULL, NULL)");
	WAIT_FOR(current(g) && registry_count(current(g)) == 1);
	pgreg_stop(g);
	PQfinish(db);
	/* a conninfo libpq cannot parse is refused, without being quoted */
	assert_null(pgreg_start("host=x password=hunter2 port", NULL, 0, err, sizeof(err)));
	assert_null(strstr(err, "hunter2"));
}

int main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_json_round_trip),
	};
	const struct CMUnitTest live[] = {
		cmocka_unit_test(test_live_load_and_notify),
		cmocka_unit_test(test_live_change_during_load),
		cmocka_unit_test(test_live_empty),
	};
	int failed = cmocka_run_group_tests_name("pgreg", pure, NULL, NULL);
	failed += cmocka_run_group_tests_name("pgreg_live", live, live_setup, live_teardown);
	return failed;
}
