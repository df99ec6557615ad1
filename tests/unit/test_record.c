/* Unit tests of record.c: the outbox encoding and the JSON every sink and tool prints. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "record.h"

static struct outrec enriched(void)
{
	return (struct outrec){.kind = REC_ENRICHED, .id = 0x00a1b2c3d4e5f607ULL, .device_id = "dev-1",
		.sensor_id = "temp", .value = 21.37, .unit = "celsius", .ts_ms = 1764150000123, .location = "hall \"A\"\n",
		.zone = "north", .device_type = "thermo", .score = -0.5001};
}

/* r as JSON, parsed back by another library */
static cJSON *round_trip(const struct outrec *r, char *buf, size_t cap)
{
	size_t n = outrec_to_json(r, buf, cap);
	assert_true(n > 0);
	assert_int_equal(strlen(buf), n);
	cJSON *o = cJSON_Parse(buf);
	if(!o) fail_msg("not JSON: %s", buf);
	return o;
}

static void test_encode_decode(void **state)
{
	(void)state;
	struct outrec r = enriched(), d;
	r.flags = OUT_ANOMALY | OUT_HAS_THRESHOLD;
	r.limit = 30;
	uint8_t buf[1024];
	size_t n = outrec_encode(&r, buf, sizeof(buf));
	assert_true(n > 0);
	assert_true(outrec_decode(REC_ENRICHED, buf, n, &d));
	assert_true(d.id == r.id && d.value == r.value && d.ts_ms == r.ts_ms && d.flags == r.flags);
	assert_string_equal(d.location, r.location);
	assert_null(d.topic);
	assert_false(outrec_decode(REC_ALERT, buf, n, &d));       /* wrong kind */
	assert_false(outrec_decode(REC_ENRICHED, buf, n - 1, &d));  /* cut short */
	assert_int_equal(outrec_encode(&r, buf, 40), 0);            /* no room */
}

static void test_enriched_json(void **state)
{
	(void)state;
	struct outrec r = enriched();
	char buf[1024];
	cJSON *o = round_trip(&r, buf, sizeof(buf));
	assert_string_equal(cJSON_GetObjectItem(o, "id")->valuestring, "00a1b2c3d4e5f607");
	assert_string_equal(cJSON_GetObjectItem(o, "location")->valuestring, "hall \"A\"\n");
	assert_true(cJSON_GetObjectItem(o, "value")->valuedouble == 21.37);
	assert_true(cJSON_GetObjectItem(o, "ts")->valuedouble == 1764150000123.0);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(o, "isAnomaly")));
	assert_null(cJSON_GetObjectItem(o, "threshold"));
	/* the shortest form, not a 17-digit one */
	assert_non_null(strstr(buf, "\"value\":21.37,"));
	assert_non_null(strstr(buf, "\"zscore\":-0.5001}"));
	cJSON_Delete(o);
	/* a NAN z-score (still warming up) is left out rather than printed as invalid JSON */
	r.score = NAN;
	o = round_trip(&r, buf, sizeof(buf));
	assert_null(cJSON_GetObjectItem(o, "zscore"));
	cJSON_Delete(o);
}

/* every double reads back as itself, short or long */
static void test_numbers_round_trip(void **state)
{
	(void)state;
	const double fixed[] = {0.0, -0.0, 0.1, -0.5, 1e-7, 123456.789, 9007199254740993.0, 1e21, -1e-300,
		5e-324, 1.7976931348623157e308, 0.30000000000000004, 2.5e15, 3.14159265358979};
	struct outrec r = {.kind = REC_ALERT, .device_id = "d", .sensor_id = "s"};
	char buf[1024];
	srand(7);
	for(int i = 0; i < 20000; i++){
		double v;
		if(i < (int)(sizeof(fixed) / sizeof(fixed[0]))) v = fixed[i];
		else if(i % 2) v = (double)(rand() % 2000000 - 1000000) / pow(10, rand() % 7);   /* sensor-like */
		else{
			uint64_t bits = ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
			memcpy(&v, &bits, sizeof(v));
			if(!isfinite(v)) continue;
		}
		r.value = v;
		assert_true(outrec_to_json(&r, buf, sizeof(buf)) > 0);
		const char *p = strstr(buf, "\"value\":");
		assert_non_null(p);
		double back = strtod(p + 8, NULL);
		if(memcmp(&back, &v, sizeof(v)) != 0) fail_msg("%.17g printed as %s", v, p + 8);
	}
}

static void test_quarantine_payloads(void **state)
{
	(void)state;
	char buf[1024];
	static const uint8_t text[] = "{\"bad\":\t1}";
	struct outrec r = {.kind = REC_QUARANTINE, .reason = 1, .topic = "t/x", .client_id = "c", .username = "",
		.payload = text, .payload_len = sizeof(text) - 1, .arrival_ms = 5};
	cJSON *o = round_trip(&r, buf, sizeof(buf));
	assert_string_equal(cJSON_GetObjectItem(o, "payload")->valuestring, (const char *)text);
	cJSON_Delete(o);
	/* not UTF-8 (and a NUL): hex */
	static const uint8_t bin[] = {0xff, 0x00, 0x41};
	r.payload = bin;
	r.payload_len = sizeof(bin);
	o = round_trip(&r, buf, sizeof(buf));
	assert_null(cJSON_GetObjectItem(o, "payload"));
	assert_string_equal(cJSON_GetObjectItem(o, "payloadHex")->valuestring, "ff0041");
	cJSON_Delete(o);
}

static void test_no_room(void **state)
{
	(void)state;
	struct outrec r = enriched();
	char buf[1024];
	size_t n = outrec_to_json(&r, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(outrec_to_json(&r, buf, n), 0);   /* no byte left for the NUL */
	assert_int_equal(outrec_to_json(&r, buf, n + 1), n);
	assert_int_equal(outrec_to_json(&r, buf, 0), 0);
}

/* A sink's writer, kept across records: each record's JSON is what the one-off call prints, also after
 * a record that did not fit (the generator was left mid-object) and for integers of every sign. */
static void test_writer_reused(void **state)
{
	(void)state;
	struct outrec_json *j = outrec_json_new(true);
	assert_non_null(j);
	struct outrec recs[4] = {enriched(), enriched(), enriched(), enriched()};
	recs[1].ts_ms = -1;
	recs[2] = (struct outrec){.kind = REC_AGGREGATE, .id = 7, .device_id = "d", .sensor_id = "s", .ts_ms = 0,
		.win_end_ms = INT64_MAX, .count = UINT32_MAX, .sum = 3, .min = 1, .max = 2, .first_ts_ms = INT64_MIN,
		.last_ts_ms = 9};
	recs[3].location = "x";
	char a[1024], b[1024];
	for(int round = 0; round < 2; round++){
		for(int i = 0; i < 4; i++){
			size_t n = outrec_json(j, &recs[i], a, sizeof(a));
			assert_true(n > 0);
			assert_int_equal(outrec_to_json(&recs[i], b, sizeof(b)), n);
			assert_string_equal(a, b);
			assert_int_equal(outrec_json(j, &recs[i], a, n / 2), 0);   /* cut off halfway */
		}
	}
	size_t n = outrec_json(j, &recs[2], a, sizeof(a));
	assert_true(n > 0);
	assert_non_null(strstr(a, "\"windowEnd\":9223372036854775807,"));
	assert_non_null(strstr(a, "\"count\":4294967295,"));
	assert_non_null(strstr(a, "\"firstTs\":-9223372036854775808,"));
	n = outrec_json(j, &recs[1], a, sizeof(a));
	assert_non_null(strstr(a, "\"ts\":-1,"));
	outrec_json_free(j);
	outrec_json_free(NULL);
}

/* the same device with strings that differ only in absent vs empty, in where one ends and the next
 * begins, or in being too long to keep; without a threshold or with another one */
static struct outrec series_variant(const char *dev, int v, const char *long_loc)
{
	struct outrec r = enriched();
	r.device_id = dev;
	switch(v){
	case 1: r.location = NULL; break;
	case 2: r.location = ""; break;
	case 3: r.unit = "a\x01"; r.location = "b"; break;
	case 4: r.unit = "a"; r.location = "\x01" "b"; break;
	case 5: r.location = long_loc; break;
	case 6: r.flags |= OUT_HAS_THRESHOLD; r.limit = 30; break;
	case 7: r.flags |= OUT_HAS_THRESHOLD; r.limit = 31; break;
	default: break;
	}
	return r;
}

/* A kept generator splices in the JSON it kept of a series' strings: the output must stay what a fresh
 * generator makes, for every variant of a series and for series that come back after others took
 * their place in the table. */
static void test_series_kept(void **state)
{
	(void)state;
	struct outrec_json *j = outrec_json_new(true);
	assert_non_null(j);
	char long_loc[400], dev[16], a[2048], b[2048];
	memset(long_loc, 'x', sizeof(long_loc) - 1);
	long_loc[sizeof(long_loc) - 1] = '\0';
	for(int round = 0; round < 3; round++){
		/* far more series than the table keeps, then a few that fit */
		int series = round == 0 ? 20000 : 50;
		for(int i = 0; i < series; i++){
			snprintf(dev, sizeof(dev), "d-%d", i);
			for(int v = 0; v < 8; v++){
				struct outrec r = series_variant(dev, v, long_loc);
				r.ts_ms += i;
				r.value = i / 100.0;
				for(int twice = 0; twice < 2; twice++){
					size_t n = outrec_json(j, &r, a, sizeof(a));
					assert_true(n > 0);
					assert_int_equal(outrec_to_json(&r, b, sizeof(b)), n);
					assert_string_equal(a, b);
					r.flags ^= OUT_ANOMALY;
				}
			}
		}
	}
	/* a kept series' JSON that does not fit the buffer */
	struct outrec r = enriched();
	size_t n = outrec_json(j, &r, a, sizeof(a));
	assert_int_equal(outrec_json(j, &r, a, n), 0);
	assert_int_equal(outrec_json(j, &r, a, 40), 0);
	assert_int_equal(outrec_json(j, &r, a, sizeof(a)), n);
	outrec_json_free(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encode_decode),
		cmocka_unit_test(test_enriched_json),
		cmocka_unit_test(test_numbers_round_trip),
		cmocka_unit_test(test_quarantine_payloads),
		cmocka_unit_test(test_no_room),
		cmocka_unit_test(test_writer_reused),
		cmocka_unit_test(test_series_kept),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
