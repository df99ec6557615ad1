#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "journal.h"
#include "processor.h"
#include "pubq.h"
#include "reason.h"
#include "record.h"
#include "regwatch.h"

/* A processor between two real journals, fed captures by hand, with the example registry. */
struct rig {
	char dir[64];
	struct config cfg;
	struct journal *in, *out;
	struct journal_reader *out_reader;
	struct regwatch *reg;
	struct pubq *q;
	struct metrics m;
	struct processor *p;
	int64_t now;
	/* the outbox records of the last feed, decoded (strings point into the journal) */
	struct outrec recs[64];
	size_t nrecs;
};

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct rig *rig_new(const struct config_kv *extra, size_t nextra)
{
	struct rig *r = calloc(1, sizeof(*r));
	snprintf(r->dir, sizeof(r->dir), "/tmp/iotpipe-test-proc-XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	struct config_kv kv[16] = {{"journal_dir", r->dir}, {"registry_file", IOTPIPE_SOURCE_DIR "/conf/registry.example.json"}};
	size_t n = 2;
	for(size_t i = 0; i < nextra; i++) kv[n++] = extra[i];
	char err[512], path[128];
	if(!config_parse(kv, n, &r->cfg, err, sizeof(err))) fail_msg("%s", err);
	snprintf(path, sizeof(path), "%s/ingest", r->dir);
	struct journal_opts o = {.dir = path, .max_bytes = 64u << 20, .readers = {"processor", NULL}};
	r->in = journal_open(&o, err, sizeof(err));
	snprintf(path, sizeof(path), "%s/outbox", r->dir);
	o.dir = path;
	o.readers[0] = "test";
	r->out = journal_open(&o, err, sizeof(err));
	assert_non_null(r->in);
	assert_non_null(r->out);
	r->out_reader = journal_reader(r->out, "test");
	r->reg = regwatch_start(r->cfg.registry_file, 1000, err, sizeof(err));
	assert_non_null(r->reg);
	r->q = pubq_new(64);
	struct processor_deps d = {.cfg = &r->cfg, .in = journal_reader(r->in, "processor"), .out = r->out, .m = &r->m,
		.pubq = r->q, .regslot = regwatch_slot(r->reg), .state_path = NULL};
	r->p = processor_new(&d, err, sizeof(err));
	assert_non_null(r->p);
	r->now = wall_ms();
	return r;
}

static void rig_free(struct rig *r)
{
	processor_free(r->p);
	regwatch_stop(r->reg);
	pubq_free(r->q);
	journal_close(r->in);
	journal_close(r->out);
	config_free(&r->cfg);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", r->dir);
	assert_int_equal(system(cmd), 0);
	free(r);
}

/* one publish through the processor; r->recs holds what it wrote to the outbox */
static void feed_as(struct rig *r, const char *topic, const char *client, const char *user, const char *payload,
		size_t len)
{
	struct capture_hdr h;
	struct iovec iov[5];
	int n = capture_iov(&h, iov, topic, client, user, payload, (uint32_t)len, (uint32_t)r->cfg.max_payload_bytes,
			1, false, r->now);
	assert_int_equal(journal_append(r->in, REC_CAPTURE, iov, n, NULL), JOURNAL_OK);
	struct journal_rec rec;
	assert_true(journal_next(journal_reader(r->in, "processor"), &rec));
	processor_handle(r->p, &rec);
	r->nrecs = 0;
	while(r->nrecs < 64 && journal_next(r->out_reader, &rec)){
		assert_true(outrec_decode((uint16_t)rec.kind, rec.body, rec.len, &r->recs[r->nrecs]));
		r->nrecs++;
	}
}

static void feed(struct rig *r, const char *topic, const char *payload)
{
	feed_as(r, topic, "client-1", "", payload, strlen(payload));
}

static const struct outrec *only(struct rig *r, uint16_t kind)
{
	const struct outrec *found = NULL;
	for(size_t i = 0; i < r->nrecs; i++){
		if(r->recs[i].kind != kind) continue;
		if(found) fail_msg("more than one %s record", rec_kind_name(kind));
		found = &r->recs[i];
	}
	if(!found){
		const struct outrec *q = r->nrecs ? &r->recs[0] : NULL;
		fail_msg("no %s record among %zu (first: %s %s %s)", rec_kind_name(kind), r->nrecs,
				q ? rec_kind_name(q->kind) : "-", q && q->kind == REC_QUARANTINE ? reason_name((enum ip_reason)q->reason) : "",
				q && q->detail ? q->detail : "");
	}
	return found;
}

static void expect_reason(struct rig *r, const char *topic, const char *payload, enum ip_reason want)
{
	feed(r, topic, payload);
	const struct outrec *q = only(r, REC_QUARANTINE);
	if(q->reason != want){
		fail_msg("%s -> %s (%s), want %s", payload, reason_name((enum ip_reason)q->reason), q->detail ? q->detail : "",
				reason_name(want));
	}
	assert_string_equal(q->topic, topic);
	assert_non_null(q->detail);
}

static void test_reference_forms_enriched(void **state)
{
	struct rig *r = rig_new(NULL, 0);
	char msg[256];
	snprintf(msg, sizeof(msg), "{\"deviceId\":\"temp-007\",\"sensorId\":\"temp\",\"value\":22.5,\"ts\":%lld}", (long long)r->now);
	feed(r, "devices/temp-007/telemetry", msg);
	const struct outrec *e = only(r, REC_ENRICHED);
	assert_string_equal(e->device_id, "temp-007");
	assert_string_equal(e->sensor_id, "temp");
	assert_true(e->value == 22.5);
	assert_int_equal(e->ts_ms, r->now);
	assert_string_equal(e->location, "Berlin");
	assert_string_equal(e->zone, "z1");
	assert_string_equal(e->device_type, "thermometer");
	assert_string_equal(e->unit, "Cel");
	assert_true((e->flags & OUT_HAS_THRESHOLD) && e->limit == 25);
	assert_false(e->flags & (OUT_ANOMALY | OUT_TS_MISSING | OUT_UNENRICHED));
	assert_int_equal(e->id, record_id_reading("temp-007", "temp", r->now));

	/* exactly the short form: no sensorId, ts in seconds */
	snprintf(msg, sizeof(msg), "{\"deviceId\":\"temp-007\",\"value\":22.5,\"ts\":%lld}", (long long)(r->now / 1000 + 1));
	feed(r, "devices/temp-007/telemetry", msg);
	e = only(r, REC_ENRICHED);
	assert_string_equal(e->sensor_id, "temp");
	assert_int_equal(e->ts_ms, (r->now / 1000 + 1) * 1000);

	/* no ts: arrival time, flagged */
	r->now += 5;
	feed(r, "devices/temp-007/telemetry", "{\"value\":21}");
	e = only(r, REC_ENRICHED);
	assert_true(e->flags & OUT_TS_MISSING);
	assert_int_equal(e->ts_ms, r->now);
	/* the same arrival millisecond again is the same reading: a retransmission */
	feed(r, "devices/temp-007/telemetry", "{\"value\":21}");
	assert_int_equal(only(r, REC_QUARANTINE)->reason, IP_R_DUPLICATE);

	/* several readings, one message; a unit converted to the registry's */
	snprintf(msg, sizeof(msg), "{\"deviceId\":\"hum-012\",\"ts\":%lld,\"readings\":{\"hum\":41,\"temp\":{\"value\":77,\"unit\":\"degF\"}}}",
			(long long)r->now);
	feed(r, "devices/hum-012/telemetry", msg);
	assert_int_equal(r->nrecs, 2);
	for(size_t i = 0; i < 2; i++){
		assert_int_equal(r->recs[i].kind, REC_ENRICHED);
		if(!strcmp(r->recs[i].sensor_id, "temp")){
			assert_true(fabs(r->recs[i].value - 25.0) < 1e-9);
			assert_string_equal(r->recs[i].unit, "Cel");
		}
	}

	/* SenML */
	snprintf(msg, sizeof(msg), "[{\"bn\":\"press-003:\",\"bt\":%.3f,\"n\":\"pressure\",\"u\":\"hPa\",\"v\":1013.25}]",
			(double)r->now / 1000.0);
	feed(r, "devices/press-003/telemetry", msg);
	e = only(r, REC_ENRICHED);
	assert_string_equal(e->sensor_id, "pressure");
	assert_true(fabs(e->value - 101325.0) < 1e-6);
	assert_string_equal(e->location, "Munich");

	/* a device without a sensors list takes any sensor */
	snprintf(msg, sizeof(msg), "{\"sensorId\":\"co2\",\"value\":612,\"ts\":%lld}", (long long)r->now);
	feed(r, "devices/gw-lab-1/telemetry", msg);
	e = only(r, REC_ENRICHED);
	assert_string_equal(e->sensor_id, "co2");
	assert_false(e->flags & OUT_UNENRICHED);
	rig_free(r);
}

static void test_every_reason(void **state)
{
	struct config_kv extra[] = {{"max_payload_bytes", "256"}, {"ts_max_age", "1h"}};
	struct rig *r = rig_new(extra, 2);
	const char *t = "devices/temp-007/telemetry";
	char msg[512];
	long long now = r->now;
	expect_reason(r, t, "not json", IP_R_MALFORMED_PAYLOAD);
	expect_reason(r, t, "{\"deviceId\":\"temp-007\"}", IP_R_MISSING_FIELD);
	expect_reason(r, t, "{\"note\":\"hello\"}", IP_R_MALFORMED_PAYLOAD);
	expect_reason(r, t, "{\"deviceId\":\"temp-007\",\"value\":\"warm\"}", IP_R_WRONG_TYPE);
	expect_reason(r, t, "{\"deviceId\":\"temp-007\",\"value\":1e999}", IP_R_NON_FINITE_VALUE);
	expect_reason(r, t, "{\"deviceId\":\"temp-007\",\"value\":1,\"ts\":\"yesterday\"}", IP_R_BAD_TIMESTAMP);
	snprintf(msg, sizeof(msg), "{\"value\":1,\"ts\":%lld}", now + 3600 * 1000);
	expect_reason(r, t, msg, IP_R_TS_FUTURE);
	snprintf(msg, sizeof(msg), "{\"value\":1,\"ts\":%lld}", now - 2 * 3600 * 1000);
	expect_reason(r, t, msg, IP_R_TS_TOO_OLD);
	expect_reason(r, "devices/ghost/telemetry", "{\"value\":1}", IP_R_UNKNOWN_DEVICE);
	expect_reason(r, t, "{\"sensorId\":\"hum\",\"value\":1}", IP_R_UNKNOWN_SENSOR);
	expect_reason(r, t, "{\"value\":151}", IP_R_OUT_OF_RANGE);
	expect_reason(r, t, "{\"value\":-50.5}", IP_R_OUT_OF_RANGE);
	snprintf(msg, sizeof(msg), "{\"value\":1,\"ts\":%lld}", now - 1000);
	feed(r, t, msg);
	only(r, REC_ENRICHED);
	expect_reason(r, t, msg, IP_R_DUPLICATE);
	memset(msg, ' ', 300);
	msg[300] = '\0';
	expect_reason(r, t, msg, IP_R_OVERSIZED_PAYLOAD);
	assert_true(only(r, REC_QUARANTINE)->flags & OUT_TRUNCATED);
	expect_reason(r, t, "{\"deviceId\":\"a+b\",\"value\":1}", IP_R_ID_INVALID);
	expect_reason(r, t, "{\"deviceId\":\"hum-012\",\"value\":1}", IP_R_IDENTITY_MISMATCH);
	expect_reason(r, t, "{\"value\":1,\"unit\":\"Pa\"}", IP_R_UNIT_MISMATCH);
	expect_reason(r, "devices/temp-007/telemetry", "{\"value\":1,\"readings\":5}", IP_R_MALFORMED_PAYLOAD);
	/* one bad reading among good ones: only it is quarantined */
	snprintf(msg, sizeof(msg), "{\"deviceId\":\"hum-012\",\"ts\":%lld,\"readings\":{\"hum\":\"wet\",\"temp\":20}}", now - 5000);
	feed(r, "devices/hum-012/telemetry", msg);
	assert_int_equal(r->nrecs, 2);
	assert_int_equal(only(r, REC_QUARANTINE)->reason, IP_R_WRONG_TYPE);
	assert_string_equal(only(r, REC_ENRICHED)->sensor_id, "temp");
	rig_free(r);

	/* the MQTT identity bound to the device id */
	struct config_kv bind[] = {{"identity", "username"}};
	r = rig_new(bind, 1);
	feed_as(r, t, "c1", "temp-007", "{\"value\":1}", 11);
	only(r, REC_ENRICHED);
	feed_as(r, t, "c1", "hum-012", "{\"value\":2}", 11);
	assert_int_equal(only(r, REC_QUARANTINE)->reason, IP_R_IDENTITY_SPOOF);
	rig_free(r);

	/* no device id anywhere */
	struct config_kv nolevel[] = {{"device_topic_level", "-1"}};
	r = rig_new(nolevel, 1);
	expect_reason(r, t, "{\"value\":1}", IP_R_MISSING_FIELD);
	rig_free(r);
}

static void test_unknown_devices_accept(void **state)
{
	struct config_kv extra[] = {{"unknown_devices", "accept"}};
	struct rig *r = rig_new(extra, 1);
	feed(r, "devices/ghost/telemetry", "{\"value\":1}");
	const struct outrec *e = only(r, REC_ENRICHED);
	assert_string_equal(e->device_id, "ghost");
	assert_string_equal(e->sensor_id, "value");
	assert_true(e->flags & OUT_UNENRICHED);
	assert_null(e->location);
	rig_free(r);
}

static void test_threshold_alert_once_and_mqtt(void **state)
{
	struct rig *r = rig_new(NULL, 0);
	const char *t = "devices/temp-007/telemetry";
	static const double values[] = {20, 26, 27, 25.2, 26, 24.4, 24, 30};
	static const int alerts[] = {0, 1, 0, 0, 0, 1, 0, 1};   /* firing, resolved below 25 - 2%, firing */
	for(size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++){
		char msg[128];
		snprintf(msg, sizeof(msg), "{\"value\":%g,\"ts\":%lld}", values[i], (long long)r->now - 100 + (long long)i);
		feed(r, t, msg);
		size_t n = 0;
		for(size_t k = 0; k < r->nrecs; k++) n += r->recs[k].kind == REC_ALERT;
		if((int)n != alerts[i]) fail_msg("value %g: %zu alerts, want %d", values[i], n, alerts[i]);
	}
	struct pubq_msg m;
	const char *states[] = {"\"firing\"", "\"resolved\"", "\"firing\""};
	for(int i = 0; i < 3; i++){
		assert_true(pubq_pop(r->q, &m));
		assert_string_equal(m.topic, "alerts/temp-007");
		m.payload[m.len] = '\0';
		assert_non_null(strstr(m.payload, states[i]));
		assert_non_null(strstr(m.payload, "\"kind\":\"threshold\""));
	}
	assert_false(pubq_pop(r->q, &m));
	rig_free(r);
}

static void test_raw_output_and_aggregate(void **state)
{
	struct config_kv extra[] = {{"raw_output", "true"}, {"window", "10s"}, {"window_lateness", "0s"}};
	struct rig *r = rig_new(extra, 3);
	long long base = (r->now / 10000) * 10000 - 60000;
	char msg[128];
	for(int i = 0; i < 5; i++){
		snprintf(msg, sizeof(msg), "{\"value\":%d,\"ts\":%lld}", 10 + i, base + i * 1000);
		feed(r, "devices/temp-007/telemetry", msg);
		only(r, REC_RAW);
	}
	snprintf(msg, sizeof(msg), "{\"value\":1,\"ts\":%lld}", base + 10000);   /* next window: closes the first */
	feed(r, "devices/temp-007/telemetry", msg);
	const struct outrec *a = only(r, REC_AGGREGATE);
	assert_int_equal(a->count, 5);
	assert_true(a->sum == 60 && a->min == 10 && a->max == 14);
	assert_int_equal(a->ts_ms, base);
	assert_int_equal(a->win_end_ms, base + 10000);
	assert_string_equal(a->location, "Berlin");
	assert_int_equal(a->id, record_id_aggregate("temp-007", "temp", base));
	rig_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_forms_enriched),
		cmocka_unit_test(test_every_reason),
		cmocka_unit_test(test_unknown_devices_accept),
		cmocka_unit_test(test_threshold_alert_once_and_mqtt),
		cmocka_unit_test(test_raw_output_and_aggregate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
