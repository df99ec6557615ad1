/* Unit tests of the payload parser: every accepted shape, every refusal the parser can give. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payload.h"
#include "reason.h"

#define NOW 1700000000000LL     /* 2023-11-14T22:13:20Z, the arrival time of every test message */
#define CAP 16

static struct ip_reading rd[CAP];
static struct payload_result res;

/* Checks that hold for every parse, whatever the input. */
static void check_invariants(enum ip_reason rc, size_t cap)
{
	assert_int_equal(rc, res.reason);
	assert_non_null(memchr(res.detail, '\0', sizeof(res.detail)));
	if(rc != IP_OK){
		assert_int_equal(res.count, 0);
		assert_true(res.detail[0] != '\0');
		return;
	}
	assert_string_equal(res.detail, "");
	assert_true(res.count >= 1);
	assert_true(res.count <= cap);
	for(size_t i = 0; i < res.count; i++){
		const struct ip_reading *r = &rd[i];

		assert_non_null(memchr(r->device_id, '\0', sizeof(r->device_id)));
		assert_non_null(memchr(r->sensor_id, '\0', sizeof(r->sensor_id)));
		assert_non_null(memchr(r->unit, '\0', sizeof(r->unit)));
		assert_non_null(memchr(r->detail, '\0', sizeof(r->detail)));
		if(r->reason == IP_OK){
			assert_string_equal(r->detail, "");
			assert_true(isfinite(r->value));
			assert_true(r->ts_ms >= 0 && r->ts_ms <= IP_TS_MAX_MS);
		}else{
			assert_true(r->detail[0] != '\0');
		}
		if(r->ts_missing) assert_true(r->ts_ms == NOW);
	}
}

/* Parses exactly len bytes from a heap block of that size, so ASan flags any read past the end:
 * the parser must never rely on a NUL terminator. out[] is poisoned so that fields the parser
 * forgets to write do not pass for empty ones. */
static enum ip_reason parse_buf(const char *s, size_t len, size_t cap)
{
	char *b = malloc(len ? len : 1);
	enum ip_reason rc;

	assert_non_null(b);
	memcpy(b, s, len);
	memset(rd, 0xA5, sizeof(rd));
	memset(&res, 0xA5, sizeof(res));
	rc = payload_parse(b, len, NOW, rd, cap, &res);
	free(b);
	check_invariants(rc, cap);
	return rc;
}

static enum ip_reason parse(const char *s)
{
	return parse_buf(s, strlen(s), CAP);
}

static enum ip_reason parse_cap(const char *s, size_t cap)
{
	return parse_buf(s, strlen(s), cap);
}

/* A message-level refusal; prints the payload when it is not the expected one. */
static void expect_refused(const char *json, enum ip_reason want)
{
	enum ip_reason rc = parse(json);

	if(rc != want){
		fail_msg("%s: got %s (%s), want %s", json, reason_name(rc), res.detail, reason_name(want));
	}
}

/* A message whose first reading alone is refused. */
static void expect_reading(const char *json, enum ip_reason want)
{
	enum ip_reason rc = parse(json);

	if(rc != IP_OK) fail_msg("%s: refused whole: %s (%s)", json, reason_name(rc), res.detail);
	if(rd[0].reason != want){
		fail_msg("%s: reading got %s (%s), want %s", json, reason_name(rd[0].reason), rd[0].detail,
				reason_name(want));
	}
}

/* pre, then n copies of c, then post: payloads with ids at and around the length limit */
static const char *filled(const char *pre, char c, size_t n, const char *post)
{
	static char buf[1024];
	size_t a = strlen(pre), b = strlen(post);

	assert_true(a + n + b < sizeof(buf));
	memcpy(buf, pre, a);
	memset(buf + a, c, n);
	memcpy(buf + a + n, post, b + 1);
	return buf;
}

/* ---- the reference form ---- */

static void test_reference_exact(void **state)
{
	assert_int_equal(parse("{\"deviceId\":\"temp-007\",\"sensorId\":\"temp\",\"value\":22.5,\"ts\":1673456789000}"), IP_OK);
	assert_int_equal(res.count, 1);
	assert_int_equal(res.form, IP_FORM_SINGLE);
	assert_string_equal(rd[0].device_id, "temp-007");
	assert_string_equal(rd[0].sensor_id, "temp");
	assert_string_equal(rd[0].unit, "");
	assert_true(rd[0].value == 22.5);
	assert_true(rd[0].ts_ms == 1673456789000LL);
	assert_false(rd[0].ts_missing);
	assert_int_equal(rd[0].reason, IP_OK);
	assert_string_equal(rd[0].detail, "");
}

static void test_reference_seconds(void **state)
{
	/* the article's raw event, byte for byte */
	assert_int_equal(parse("{\"deviceId\":\"temp-007\",\"value\":22.5,\"ts\":1673456789}"), IP_OK);
	assert_int_equal(res.count, 1);
	assert_string_equal(rd[0].device_id, "temp-007");
	assert_string_equal(rd[0].sensor_id, "");
	assert_true(rd[0].value == 22.5);
	assert_true(rd[0].ts_ms == 1673456789000LL);
	assert_false(rd[0].ts_missing);
}

static void test_reference_variants(void **state)
{
	/* fractional seconds are rounded to the ms, not truncated (x.123*1000 is x122.9999...) */
	assert_int_equal(parse("{\"value\":1,\"ts\":1673456789.123}"), IP_OK);
	assert_true(rd[0].ts_ms == 1673456789123LL);
	assert_string_equal(rd[0].device_id, "");

	/* the seconds/ms boundary */
	assert_int_equal(parse("{\"value\":1,\"ts\":99999999999}"), IP_OK);
	assert_true(rd[0].ts_ms == 99999999999000LL);
	assert_int_equal(parse("{\"value\":1,\"ts\":100000000000}"), IP_OK);
	assert_true(rd[0].ts_ms == 100000000000LL);
	assert_int_equal(parse("{\"value\":1,\"ts\":0}"), IP_OK);
	assert_true(rd[0].ts_ms == 0);
	assert_int_equal(parse("{\"value\":1,\"ts\":1.673456789123e12}"), IP_OK);
	assert_true(rd[0].ts_ms == 1673456789123LL);
	assert_int_equal(parse("{\"value\":1,\"ts\":253402300799999}"), IP_OK);
	assert_true(rd[0].ts_ms == IP_TS_MAX_MS);

	/* key order, unit, unknown keys (nested too), whitespace, trailing newline and NUL */
	assert_int_equal(parse(" \r\n\t{ \"ts\" : 1673456789000 , \"unit\" : \"Cel\" , \"value\" : -4e1 ,"
			"\"fw\":{\"v\":[1,2,{\"x\":null}]}, \"sensorId\":\"t\", \"deviceId\":\"d\", \"extra\":true }\n"), IP_OK);
	assert_true(rd[0].value == -40.0);
	assert_string_equal(rd[0].unit, "Cel");
	assert_string_equal(rd[0].sensor_id, "t");
	assert_string_equal(rd[0].device_id, "d");
	assert_int_equal(parse_buf("{\"value\":7}\0\0", 13, CAP), IP_OK);
	assert_true(rd[0].value == 7.0);

	/* an empty unit is no unit */
	assert_int_equal(parse("{\"value\":1,\"unit\":\"\"}"), IP_OK);
	assert_string_equal(rd[0].unit, "");
	/* the longest unit */
	assert_int_equal(parse("{\"value\":1,\"unit\":\"123456789012345\"}"), IP_OK);
	assert_string_equal(rd[0].unit, "123456789012345");
	/* a UTF-8 BOM is skipped by cJSON */
	assert_int_equal(parse("\xEF\xBB\xBF{\"value\":1}"), IP_OK);
	/* integers beyond 2^53 are still finite doubles */
	assert_int_equal(parse("{\"value\":123456789012345678901234567890}"), IP_OK);
	assert_true(rd[0].value > 1.2e29);
}

static void test_missing_ts(void **state)
{
	assert_int_equal(parse("{\"deviceId\":\"d1\",\"value\":3}"), IP_OK);
	assert_true(rd[0].ts_missing);
	assert_true(rd[0].ts_ms == NOW);
}

static void test_rfc3339(void **state)
{
	static const struct {
		const char *s;
		int64_t ms;
	} good[] = {
		{"2023-01-11T17:06:29Z", 1673456789000LL},
		{"2023-01-11t17:06:29z", 1673456789000LL},
		{"2023-01-11T17:06:29.123+02:00", 1673456789123LL - 7200000},
		{"2023-01-11T17:06:29.1Z", 1673456789100LL},
		{"2023-01-11T17:06:29.12Z", 1673456789120LL},
		{"2023-01-11T17:06:29.123456789Z", 1673456789123LL},
		{"2023-01-11T17:06:29.999999Z", 1673456789999LL},
		{"2023-01-11T17:06:29-05:30", 1673456789000LL + 19800000},
		{"2023-01-11T17:06:29+00:00", 1673456789000LL},
		{"2023-01-11T17:06:29-00:00", 1673456789000LL},
		{"2024-02-29T00:00:00Z", 1709164800000LL},
		{"2000-02-29T12:00:00Z", 951825600000LL},
		{"1970-01-01T00:00:00Z", 0},
		{"1970-01-01T01:00:00+01:00", 0},
		{"2016-12-31T23:59:60Z", 1483228799999LL},
		{"9999-12-31T23:59:59.999Z", IP_TS_MAX_MS},
	};
	static const char *const bad[] = {
		"", "2023", "2023-01-11", "2023-01-11T17:06", "2023-01-11T17:06:29",
		"2023-01-11 17:06:29Z", "2023-01-11_17:06:29Z", "2023-1-11T17:06:29Z", "23-01-11T17:06:29Z",
		"2023-00-11T17:06:29Z", "2023-13-11T17:06:29Z", "2023-01-00T17:06:29Z", "2023-01-32T17:06:29Z",
		"2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2023-04-31T00:00:00Z",
		"2023-01-11T24:00:00Z", "2023-01-11T17:60:00Z", "2023-01-11T17:06:61Z",
		"2023-01-11T17:06:29.Z", "2023-01-11T17:06:29.1234567890Z", "2023-01-11T17:06:29,5Z",
		"2023-01-11T17:06:29+2:00", "2023-01-11T17:06:29+02", "2023-01-11T17:06:29+0200",
		"2023-01-11T17:06:29+24:00", "2023-01-11T17:06:29+02:60", "2023-01-11T17:06:29Zjunk",
		"2023-01-11T17:06:29Z ", " 2023-01-11T17:06:29Z", "2023-01-11T17:06:29UTC",
		"1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00", "0000-01-01T00:00:00Z",
		"9999-12-31T23:59:59-01:00", "+2023-01-11T17:06:29Z", "2023-01-11T17:06:29.12a4Z",
		"1673456789000", "２023-01-11T17:06:29Z",
	};
	int64_t ms;

	for(size_t i = 0; i < sizeof(good)/sizeof(good[0]); i++){
		ms = -1;
		if(!payload_rfc3339_ms(good[i].s, &ms) || ms != good[i].ms){
			fail_msg("%s: got %lld want %lld", good[i].s, (long long)ms, (long long)good[i].ms);
		}
	}
	for(size_t i = 0; i < sizeof(bad)/sizeof(bad[0]); i++){
		if(payload_rfc3339_ms(bad[i], &ms)) fail_msg("%s: accepted as %lld", bad[i], (long long)ms);
	}

	/* and through the parser */
	assert_int_equal(parse("{\"value\":1,\"ts\":\"2023-01-11T17:06:29.123+02:00\"}"), IP_OK);
	assert_true(rd[0].ts_ms == 1673449589123LL);
	assert_false(rd[0].ts_missing);
	expect_refused("{\"value\":1,\"ts\":\"2023-01-11T17:06:29\"}", IP_R_BAD_TIMESTAMP);
	assert_non_null(strstr(res.detail, "ts"));
}

static void test_bad_ts(void **state)
{
	static const char *const bad[] = {
		"{\"value\":1,\"ts\":-1}",
		"{\"value\":1,\"ts\":-0.5}",
		"{\"value\":1,\"ts\":true}",
		"{\"value\":1,\"ts\":null}",
		"{\"value\":1,\"ts\":{}}",
		"{\"value\":1,\"ts\":[1673456789]}",
		"{\"value\":1,\"ts\":1e999}",
		"{\"value\":1,\"ts\":1e300}",
		"{\"value\":1,\"ts\":253402300800000}",
		"{\"value\":1,\"ts\":\"\"}",
		"{\"value\":1,\"ts\":\"yesterday\"}",
		"{\"value\":1,\"ts\":\"1673456789000\"}",
	};

	for(size_t i = 0; i < sizeof(bad)/sizeof(bad[0]); i++){
		expect_refused(bad[i], IP_R_BAD_TIMESTAMP);
		assert_int_equal(res.form, IP_FORM_SINGLE);
	}
}

static void test_not_json(void **state)
{
	static const char *const bad[] = {
		"{", "}", "hello", "{\"value\":}", "{\"value\":1,}", "{value:1}", "{'value':1}",
		"{\"value\":NaN}", "{\"value\":Infinity}", "{\"value\":1", "[",
		"{\"value\":1} x", "{\"value\":1}{\"value\":2}", "\"abc", " ", "\n",
	};

	for(size_t i = 0; i < sizeof(bad)/sizeof(bad[0]); i++) expect_refused(bad[i], IP_R_MALFORMED_PAYLOAD);
	/* an embedded NUL before garbage, with the real length */
	assert_int_equal(parse_buf("{\"value\":1}\0x", 13, CAP), IP_R_MALFORMED_PAYLOAD);
	/* nothing at all */
	assert_int_equal(payload_parse(NULL, 0, NOW, rd, CAP, &res), IP_R_MALFORMED_PAYLOAD);
	assert_int_equal(res.count, 0);
	assert_int_equal(parse_buf("{}", 0, CAP), IP_R_MALFORMED_PAYLOAD);
}

static void test_wrong_shape(void **state)
{
	static const char *const bad[] = {
		"42", "-1.5", "\"text\"", "true", "false", "null",
		"{}", "{\"Value\":1}",
		"{\"value\":1,\"readings\":{\"t\":1}}",
		"[]", "[1]", "[{\"n\":\"a\",\"v\":1},\"x\"]", "[[{\"n\":\"a\",\"v\":1}]]", "[null]",
	};

	for(size_t i = 0; i < sizeof(bad)/sizeof(bad[0]); i++) expect_refused(bad[i], IP_R_MALFORMED_PAYLOAD);
	/* a reading's other fields without its value: the value is the missing field */
	expect_refused("{\"deviceId\":\"d1\"}", IP_R_MISSING_FIELD);
	expect_refused("{\"deviceId\":\"d1\",\"ts\":1673456789}", IP_R_MISSING_FIELD);
	assert_non_null(strstr(res.detail, "value"));
}

static void test_value_errors(void **state)
{
	static const struct {
		const char *json;
		enum ip_reason want;
	} cases[] = {
		{"{\"value\":\"22.5\"}", IP_R_WRONG_TYPE},
		{"{\"value\":true}", IP_R_WRONG_TYPE},
		{"{\"value\":false}", IP_R_WRONG_TYPE},
		{"{\"value\":null}", IP_R_WRONG_TYPE},
		{"{\"value\":{}}", IP_R_WRONG_TYPE},
		{"{\"value\":{\"value\":1}}", IP_R_WRONG_TYPE},
		{"{\"value\":[22.5]}", IP_R_WRONG_TYPE},
		{"{\"value\":1e999}", IP_R_NON_FINITE_VALUE},
		{"{\"value\":-1e999}", IP_R_NON_FINITE_VALUE},
		{"{\"deviceId\":42,\"value\":1}", IP_R_WRONG_TYPE},
		{"{\"deviceId\":null,\"value\":1}", IP_R_WRONG_TYPE},
		{"{\"sensorId\":[],\"value\":1}", IP_R_WRONG_TYPE},
		{"{\"sensorId\":true,\"value\":1}", IP_R_WRONG_TYPE},
		{"{\"unit\":5,\"value\":1}", IP_R_WRONG_TYPE},
		{"{\"unit\":null,\"value\":1}", IP_R_WRONG_TYPE},
		{"{\"unit\":\"1234567890123456\",\"value\":1}", IP_R_ID_INVALID},
		{"{\"unit\":\"C\\u0000el\",\"value\":1}", IP_OK},     /* cJSON cuts at the NUL: "C" */
		{"{\"unit\":\"C\\nl\",\"value\":1}", IP_R_ID_INVALID},
		{"{\"unit\":\"\xff\",\"value\":1}", IP_R_ID_INVALID},
		{"{\"unit\":\"m/s\",\"value\":1}", IP_OK},
		{"{\"unit\":\"\xC2\xB0" "C\",\"value\":1}", IP_OK},
	};

	for(size_t i = 0; i < sizeof(cases)/sizeof(cases[0]); i++){
		expect_refused(cases[i].json, cases[i].want);
	}
	expect_refused("{\"value\":\"22.5\"}", IP_R_WRONG_TYPE);
	assert_string_equal(res.detail, "value is a string, not a number");
	expect_refused("{\"value\":1e999}", IP_R_NON_FINITE_VALUE);
	assert_non_null(strstr(res.detail, "value"));
	expect_refused("{\"deviceId\":42,\"value\":1}", IP_R_WRONG_TYPE);
	assert_non_null(strstr(res.detail, "deviceId"));
}

static void test_ids(void **state)
{
	static const char *const bad[] = {
		"", "a/b", "a+b", "a#b", "/", "+", "#", "a\\tb", "a\\nb", "\\u0001", "a\\u007fb", "a\\u0085b",
		"\xff", "a\xc0\xaf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80",
		"\xc3", "abc\xe2\x82", "\x80",
	};
	static const char *const good[] = {
		"temp-007", "a", "K\303\274che-1", "\xf0\x9f\x8c\xa1", "urn:dev:ow:10e2073a01080063",
		"with space", "a.b_c-d:e", "\xe2\x82\xac", "\xc2\xa0",
	};
	char buf[512];
	const char *json = buf;

	for(size_t i = 0; i < sizeof(bad)/sizeof(bad[0]); i++){
		snprintf(buf, sizeof(buf), "{\"deviceId\":\"%s\",\"value\":1}", bad[i]);
		expect_refused(json, IP_R_ID_INVALID);
		assert_non_null(strstr(res.detail, "deviceId"));
		snprintf(buf, sizeof(buf), "{\"sensorId\":\"%s\",\"value\":1}", bad[i]);
		expect_refused(json, IP_R_ID_INVALID);
		assert_non_null(strstr(res.detail, "sensorId"));
	}
	for(size_t i = 0; i < sizeof(good)/sizeof(good[0]); i++){
		snprintf(buf, sizeof(buf), "{\"deviceId\":\"%s\",\"sensorId\":\"%s\",\"value\":1}", good[i], good[i]);
		if(parse(json) != IP_OK) fail_msg("%s: %s", json, res.detail);
		assert_string_equal(rd[0].device_id, good[i]);
		assert_string_equal(rd[0].sensor_id, good[i]);
	}

	/* at the length limit and one over */
	json = filled("{\"deviceId\":\"", 'd', IP_ID_MAX - 1, "\",\"value\":1}");
	assert_int_equal(parse(json), IP_OK);
	assert_int_equal(strlen(rd[0].device_id), IP_ID_MAX - 1);
	json = filled("{\"deviceId\":\"", 'd', IP_ID_MAX, "\",\"value\":1}");
	expect_refused(json, IP_R_ID_INVALID);
	json = filled("{\"sensorId\":\"", 's', IP_ID_MAX - 1, "\",\"value\":1}");
	assert_int_equal(parse(json), IP_OK);
	assert_int_equal(strlen(rd[0].sensor_id), IP_ID_MAX - 1);
	json = filled("{\"sensorId\":\"", 's', IP_ID_MAX, "\",\"value\":1}");
	expect_refused(json, IP_R_ID_INVALID);
	/* far over: no measuring past the limit, still refused */
	json = filled("{\"deviceId\":\"", 'd', 400, "\",\"value\":1}");
	expect_refused(json, IP_R_ID_INVALID);
	/* a 2-byte character at the end: 61 + 2 = 63 bytes fit, 62 + 2 = 64 do not */
	json = filled("{\"deviceId\":\"", 'd', IP_ID_MAX - 3, "\xc3\xbc\",\"value\":1}");
	assert_int_equal(parse(json), IP_OK);
	assert_int_equal(strlen(rd[0].device_id), IP_ID_MAX - 1);
	json = filled("{\"deviceId\":\"", 'd', IP_ID_MAX - 2, "\xc3\xbc\",\"value\":1}");
	expect_refused(json, IP_R_ID_INVALID);
	/* an escaped id is checked once unescaped */
	assert_int_equal(parse("{\"deviceId\":\"\\u0074emp\",\"value\":1}"), IP_OK);
	assert_string_equal(rd[0].device_id, "temp");
	expect_refused("{\"deviceId\":\"a\\/b\",\"value\":1}", IP_R_ID_INVALID);
}

static void test_duplicate_keys(void **state)
{
	expect_refused("{\"value\":1,\"value\":2}", IP_R_MALFORMED_PAYLOAD);
	assert_non_null(strstr(res.detail, "value"));
	expect_refused("{\"deviceId\":\"a\",\"value\":1,\"deviceId\":\"b\"}", IP_R_MALFORMED_PAYLOAD);
	expect_refused("{\"ts\":1,\"value\":1,\"ts\":2}", IP_R_MALFORMED_PAYLOAD);
	expect_refused("{\"readings\":{\"t\":1},\"readings\":{\"h\":2}}", IP_R_MALFORMED_PAYLOAD);
	expect_refused("{\"readings\":{\"t\":{\"value\":1,\"value\":2}}}", IP_R_MALFORMED_PAYLOAD);
	expect_refused("[{\"n\":\"a\",\"v\":1,\"v\":2}]", IP_R_MALFORMED_PAYLOAD);
	expect_refused("[{\"n\":\"a\",\"v\":1},{\"bn\":\"x:\",\"bn\":\"y:\",\"v\":2}]", IP_R_MALFORMED_PAYLOAD);
	/* unknown keys may repeat: they are not read */
	assert_int_equal(parse("{\"value\":1,\"x\":1,\"x\":2}"), IP_OK);
}

/* ---- several readings ---- */

static void test_multi(void **state)
{
	assert_int_equal(parse("{\"deviceId\":\"d1\",\"ts\":1673456789000,\"readings\":{\"temp\":22.5,\"hum\":41}}"), IP_OK);
	assert_int_equal(res.form, IP_FORM_MULTI);
	assert_int_equal(res.count, 2);
	assert_string_equal(rd[0].device_id, "d1");
	assert_string_equal(rd[0].sensor_id, "temp");
	assert_true(rd[0].value == 22.5);
	assert_true(rd[0].ts_ms == 1673456789000LL);
	assert_false(rd[0].ts_missing);
	assert_int_equal(rd[0].reason, IP_OK);
	assert_string_equal(rd[1].device_id, "d1");
	assert_string_equal(rd[1].sensor_id, "hum");
	assert_true(rd[1].value == 41.0);
	assert_true(rd[1].ts_ms == 1673456789000LL);
	assert_int_equal(rd[1].reason, IP_OK);
	assert_string_equal(rd[1].unit, "");

	/* object entries, a message-wide default unit, per-reading unit and ts */
	assert_int_equal(parse("{\"unit\":\"Cel\",\"ts\":\"2023-01-11T17:06:29Z\",\"readings\":{"
			"\"temp\":{\"value\":22.5},"
			"\"hum\":{\"value\":41,\"unit\":\"%RH\",\"note\":\"ignored\"},"
			"\"p\":{\"ts\":1673456790,\"value\":1013.2,\"unit\":\"hPa\"}}}"), IP_OK);
	assert_int_equal(res.count, 3);
	assert_string_equal(rd[0].device_id, "");
	assert_string_equal(rd[0].unit, "Cel");
	assert_true(rd[0].ts_ms == 1673456789000LL);
	assert_string_equal(rd[1].unit, "%RH");
	assert_true(rd[1].value == 41.0);
	assert_string_equal(rd[2].unit, "hPa");
	assert_true(rd[2].ts_ms == 1673456790000LL);
	assert_true(rd[2].value == 1013.2);

	/* no ts at all: every reading flagged */
	assert_int_equal(parse("{\"deviceId\":\"d1\",\"readings\":{\"a\":1,\"b\":{\"value\":2}}}"), IP_OK);
	assert_true(rd[0].ts_missing && rd[1].ts_missing);
	assert_true(rd[0].ts_ms == NOW && rd[1].ts_ms == NOW);
	/* a reading's own ts is not missing even when the message has none */
	assert_int_equal(parse("{\"readings\":{\"a\":1,\"b\":{\"value\":2,\"ts\":5}}}"), IP_OK);
	assert_true(rd[0].ts_missing);
	assert_false(rd[1].ts_missing);
	assert_true(rd[1].ts_ms == 5000);
}

static void test_multi_bad_among_good(void **state)
{
	static const struct {
		const char *sensor;
		enum ip_reason reason;
		const char *detail_has;
	} want[] = {
		{"temp", IP_OK, NULL},
		{"hum", IP_R_WRONG_TYPE, "value"},
		{"co2", IP_R_MISSING_FIELD, "value"},
		{"p", IP_R_NON_FINITE_VALUE, "value"},
		{"", IP_R_ID_INVALID, "sensor id"},       /* "x/y" */
		{"ok", IP_OK, NULL},
		{"t2", IP_R_BAD_TIMESTAMP, "ts"},
		{"u", IP_R_WRONG_TYPE, "unit"},
		{"arr", IP_R_WRONG_TYPE, "value"},
		{"nul", IP_R_WRONG_TYPE, "value"},
		{"", IP_R_ID_INVALID, "empty"},           /* "" */
		{"u2", IP_R_ID_INVALID, "unit"},
		{"last", IP_OK, NULL},
	};

	assert_int_equal(parse("{\"deviceId\":\"d1\",\"ts\":1673456789000,\"readings\":{"
			"\"temp\":22.5,\"hum\":\"41\",\"co2\":{\"unit\":\"ppm\"},\"p\":{\"value\":1e999},\"x/y\":1,"
			"\"ok\":3,\"t2\":{\"value\":1,\"ts\":-5},\"u\":{\"value\":1,\"unit\":7},\"arr\":[1],"
			"\"nul\":null,\"\":4,\"u2\":{\"value\":1,\"unit\":\"0123456789abcdefg\"},\"last\":{\"value\":-1}}}"), IP_OK);
	assert_int_equal(res.count, sizeof(want)/sizeof(want[0]));
	for(size_t i = 0; i < res.count; i++){
		if(rd[i].reason != want[i].reason){
			fail_msg("reading %zu: got %s (%s) want %s", i, reason_name(rd[i].reason), rd[i].detail,
					reason_name(want[i].reason));
		}
		assert_string_equal(rd[i].sensor_id, want[i].sensor);
		assert_string_equal(rd[i].device_id, "d1");
		if(want[i].detail_has) assert_non_null(strstr(rd[i].detail, want[i].detail_has));
	}
	assert_true(rd[0].value == 22.5);
	assert_true(rd[5].value == 3.0);
	assert_true(rd[12].value == -1.0);
}

static void test_multi_errors(void **state)
{
	expect_refused("{\"readings\":{}}", IP_R_MALFORMED_PAYLOAD);
	expect_refused("{\"readings\":[]}", IP_R_WRONG_TYPE);
	expect_refused("{\"readings\":[{\"temp\":1}]}", IP_R_WRONG_TYPE);
	expect_refused("{\"readings\":22.5}", IP_R_WRONG_TYPE);
	expect_refused("{\"readings\":null}", IP_R_WRONG_TYPE);
	expect_refused("{\"sensorId\":\"t\",\"readings\":{\"temp\":1}}", IP_R_MALFORMED_PAYLOAD);
	/* message-wide fields are the message's faults */
	expect_refused("{\"deviceId\":\"a/b\",\"readings\":{\"temp\":1}}", IP_R_ID_INVALID);
	expect_refused("{\"deviceId\":7,\"readings\":{\"temp\":1}}", IP_R_WRONG_TYPE);
	expect_refused("{\"ts\":\"soon\",\"readings\":{\"temp\":1}}", IP_R_BAD_TIMESTAMP);
	expect_refused("{\"ts\":-1,\"readings\":{\"temp\":1}}", IP_R_BAD_TIMESTAMP);
	expect_refused("{\"unit\":[],\"readings\":{\"temp\":1}}", IP_R_WRONG_TYPE);
	/* the readings key is the sensor id */
	const char *json = filled("{\"readings\":{\"", 's', IP_ID_MAX - 1, "\":1}}");
	assert_int_equal(parse(json), IP_OK);
	assert_int_equal(rd[0].reason, IP_OK);
	assert_int_equal(strlen(rd[0].sensor_id), IP_ID_MAX - 1);
	json = filled("{\"readings\":{\"", 's', IP_ID_MAX, "\":1}}");
	expect_reading(json, IP_R_ID_INVALID);
	expect_reading("{\"readings\":{\"a\\u0000b\":1}}", IP_OK);   /* cJSON keeps "a" */
	expect_reading("{\"readings\":{\"a\\u0007b\":1}}", IP_R_ID_INVALID);
	expect_reading("{\"readings\":{\"t\":true}}", IP_R_WRONG_TYPE);
	expect_reading("{\"readings\":{\"t\":\"1\"}}", IP_R_WRONG_TYPE);
	expect_reading("{\"readings\":{\"t\":{}}}", IP_R_MISSING_FIELD);
	expect_reading("{\"readings\":{\"t\":{\"value\":\"x\"}}}", IP_R_WRONG_TYPE);
	expect_reading("{\"readings\":{\"t\":{\"value\":-1e999}}}", IP_R_NON_FINITE_VALUE);
	expect_reading("{\"readings\":{\"t\":{\"value\":1,\"ts\":\"2023-02-30T00:00:00Z\"}}}", IP_R_BAD_TIMESTAMP);
	expect_reading("{\"readings\":{\"t\":{\"value\":1,\"ts\":false}}}", IP_R_BAD_TIMESTAMP);
	expect_reading("{\"readings\":{\"t\":{\"value\":1,\"unit\":\"\\u0001\"}}}", IP_R_ID_INVALID);
}

static void test_capacity(void **state)
{
	char json[1024];
	size_t off;

	assert_int_equal(parse_cap("{\"value\":1}", 1), IP_OK);
	assert_int_equal(parse_cap("{\"value\":1}", 0), IP_R_TOO_MANY_READINGS);

	assert_int_equal(parse_cap("{\"readings\":{\"a\":1,\"b\":2,\"c\":3}}", 3), IP_OK);
	assert_int_equal(res.count, 3);
	assert_int_equal(parse_cap("{\"readings\":{\"a\":1,\"b\":2,\"c\":3}}", 2), IP_R_TOO_MANY_READINGS);
	assert_non_null(strstr(res.detail, "3"));
	/* too many wins over a fault in one of them */
	assert_int_equal(parse_cap("{\"deviceId\":\"a/b\",\"readings\":{\"a\":1,\"b\":2,\"c\":3}}", 2),
			IP_R_TOO_MANY_READINGS);

	assert_int_equal(parse_cap("[{\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"v\":2}]", 2), IP_OK);
	assert_int_equal(parse_cap("[{\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"v\":2}]", 1), IP_R_TOO_MANY_READINGS);

	/* CAP + 1 records */
	off = (size_t)snprintf(json, sizeof(json), "[");
	for(int i = 0; i <= CAP; i++){
		off += (size_t)snprintf(json + off, sizeof(json) - off, "%s{\"n\":\"s%d\",\"v\":%d}", i ? "," : "", i, i);
	}
	snprintf(json + off, sizeof(json) - off, "]");
	expect_refused(json, IP_R_TOO_MANY_READINGS);
	/* exactly CAP */
	char *last = json, *p;
	while((p = strstr(last + 1, "},{")) != NULL) last = p;
	last[1] = ']';
	last[2] = '\0';
	assert_int_equal(parse(json), IP_OK);
	assert_int_equal(res.count, CAP);
	assert_string_equal(rd[CAP-1].sensor_id, "s15");
}

/* ---- SenML ---- */

static void test_senml_rfc_example(void **state)
{
	/* RFC 8428 section 5.1.2, multiple datapoints from one sensor */
	assert_int_equal(parse("[{\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"bt\":1.320067464e+09,"
			"\"bu\":\"%RH\",\"v\":20},{\"u\":\"lon\",\"v\":24.30621},{\"u\":\"lat\",\"v\":60.07965},"
			"{\"t\":60,\"v\":20.3},{\"u\":\"lon\",\"t\":60,\"v\":24.30622}]"), IP_OK);
	assert_int_equal(res.form, IP_FORM_SENML);
	assert_int_equal(res.count, 5);
	for(size_t i = 0; i < 5; i++){
		assert_int_equal(rd[i].reason, IP_OK);
		assert_string_equal(rd[i].device_id, "urn:dev:ow:10e2073a01080063");
		assert_string_equal(rd[i].sensor_id, "");
		assert_false(rd[i].ts_missing);
	}
	assert_true(rd[0].ts_ms == 1320067464000LL);
	assert_string_equal(rd[0].unit, "%RH");
	assert_true(rd[0].value == 20.0);
	assert_string_equal(rd[1].unit, "lon");
	assert_string_equal(rd[2].unit, "lat");
	assert_string_equal(rd[3].unit, "%RH");
	assert_true(rd[3].ts_ms == 1320067524000LL);
	assert_true(rd[3].value == 20.3);
	assert_true(rd[4].ts_ms == 1320067524000LL);
}

static void test_senml_names(void **state)
{
	assert_int_equal(parse("[{\"bn\":\"dev1/\",\"n\":\"temp\",\"u\":\"Cel\",\"v\":22.5,\"t\":1673456789}]"), IP_OK);
	assert_string_equal(rd[0].device_id, "dev1");
	assert_string_equal(rd[0].sensor_id, "temp");
	assert_string_equal(rd[0].unit, "Cel");
	assert_true(rd[0].ts_ms == 1673456789000LL);

	/* bn without a separator is the device id as it is */
	assert_int_equal(parse("[{\"bn\":\"dev1\",\"n\":\"temp\",\"v\":1}]"), IP_OK);
	assert_string_equal(rd[0].device_id, "dev1");
	assert_string_equal(rd[0].sensor_id, "temp");

	/* no bn: split n at its last separator */
	assert_int_equal(parse("[{\"n\":\"dev1:temp\",\"v\":1},{\"n\":\"dev2/hum\",\"v\":2},{\"n\":\"temp\",\"v\":3},"
			"{\"n\":\"urn:dev:mac:0024befffe804ff1:co2\",\"v\":4},{\"n\":\"dev3:\",\"v\":5},{\"n\":\"a.b_c-d\",\"v\":6}]"), IP_OK);
	assert_int_equal(res.count, 6);
	assert_string_equal(rd[0].device_id, "dev1");
	assert_string_equal(rd[0].sensor_id, "temp");
	assert_string_equal(rd[1].device_id, "dev2");
	assert_string_equal(rd[1].sensor_id, "hum");
	assert_string_equal(rd[2].device_id, "");
	assert_string_equal(rd[2].sensor_id, "temp");
	assert_string_equal(rd[3].device_id, "urn:dev:mac:0024befffe804ff1");
	assert_string_equal(rd[3].sensor_id, "co2");
	assert_string_equal(rd[4].device_id, "dev3");
	assert_string_equal(rd[4].sensor_id, "");
	assert_string_equal(rd[5].device_id, "");
	assert_string_equal(rd[5].sensor_id, "a.b_c-d");
	for(size_t i = 0; i < 6; i++){
		assert_int_equal(rd[i].reason, IP_OK);
		assert_true(rd[i].ts_missing);
	}

	/* bn carries over and can be replaced; "" clears it */
	assert_int_equal(parse("[{\"bn\":\"a:\",\"n\":\"x\",\"v\":1},{\"n\":\"y\",\"v\":2},{\"bn\":\"b:\",\"n\":\"x\",\"v\":3},"
			"{\"bn\":\"\",\"n\":\"c:z\",\"v\":4}]"), IP_OK);
	assert_string_equal(rd[1].device_id, "a");
	assert_string_equal(rd[1].sensor_id, "y");
	assert_string_equal(rd[2].device_id, "b");
	assert_string_equal(rd[3].device_id, "c");
	assert_string_equal(rd[3].sensor_id, "z");

	/* limits: a 63-byte device plus its separator, a 63-byte sensor; one more is refused */
	const char *json = filled("[{\"bn\":\"", 'd', IP_ID_MAX - 1, ":\",\"n\":\"t\",\"v\":1}]");
	assert_int_equal(parse(json), IP_OK);
	assert_int_equal(rd[0].reason, IP_OK);
	assert_int_equal(strlen(rd[0].device_id), IP_ID_MAX - 1);
	json = filled("[{\"bn\":\"", 'd', IP_ID_MAX, ":\",\"n\":\"t\",\"v\":1}]");
	expect_reading(json, IP_R_ID_INVALID);
	json = filled("[{\"bn\":\"", 'd', IP_ID_MAX, "\",\"n\":\"t\",\"v\":1}]");
	expect_reading(json, IP_R_ID_INVALID);
	json = filled("[{\"bn\":\"d:\",\"n\":\"", 's', IP_ID_MAX - 1, "\",\"v\":1}]");
	expect_reading(json, IP_OK);
	json = filled("[{\"bn\":\"d:\",\"n\":\"", 's', IP_ID_MAX, "\",\"v\":1}]");
	expect_reading(json, IP_R_ID_INVALID);
	json = filled("[{\"n\":\"", 's', IP_ID_MAX - 1, "\",\"v\":1}]");
	expect_reading(json, IP_OK);
	json = filled("[{\"n\":\"", 's', IP_ID_MAX, "\",\"v\":1}]");
	expect_reading(json, IP_R_ID_INVALID);
	json = filled("[{\"n\":\"", 'd', IP_ID_MAX, ":t\",\"v\":1}]");
	expect_reading(json, IP_R_ID_INVALID);
	json = filled("[{\"n\":\"d:", 's', 300, "\",\"v\":1}]");
	expect_reading(json, IP_R_ID_INVALID);
}

static void test_senml_name_errors(void **state)
{
	expect_reading("[{\"v\":1}]", IP_R_MISSING_FIELD);
	expect_reading("[{\"n\":\"\",\"v\":1}]", IP_R_MISSING_FIELD);
	expect_reading("[{\"n\":7,\"v\":1}]", IP_R_WRONG_TYPE);
	expect_reading("[{\"n\":\"temp sensor\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"n\":\"-temp\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"n\":\":temp\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"n\":\"t+1\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"n\":\"K\xc3\xbc" "che\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"n\":\"site/dev/temp\",\"v\":1}]", IP_R_ID_INVALID);     /* device "site/dev" */
	expect_reading("[{\"bn\":\"d:\",\"n\":\"a/b\",\"v\":1}]", IP_R_ID_INVALID);  /* sensor with '/' */
	expect_reading("[{\"bn\":\"d:\",\"n\":\"a b\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"bn\":\"site/dev/\",\"n\":\"t\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"bn\":\"_dev:\",\"n\":\"t\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"bn\":\":\",\"n\":\"t\",\"v\":1}]", IP_R_ID_INVALID);

	/* a bad bn refuses its record and the later ones, until a good bn replaces it */
	assert_int_equal(parse("[{\"n\":\"ok:a\",\"v\":0},{\"bn\":5,\"n\":\"t\",\"v\":1},{\"n\":\"h\",\"v\":2},"
			"{\"bn\":\"dev:\",\"n\":\"t\",\"v\":3},{\"bn\":\"bad dev\",\"v\":4},{\"n\":\"x\",\"v\":5}]"), IP_OK);
	assert_int_equal(res.count, 6);
	assert_int_equal(rd[0].reason, IP_OK);
	assert_int_equal(rd[1].reason, IP_R_WRONG_TYPE);
	assert_non_null(strstr(rd[1].detail, "bn"));
	assert_int_equal(rd[2].reason, IP_R_WRONG_TYPE);
	assert_int_equal(rd[3].reason, IP_OK);
	assert_string_equal(rd[3].device_id, "dev");
	assert_int_equal(rd[4].reason, IP_R_ID_INVALID);
	assert_int_equal(rd[5].reason, IP_R_ID_INVALID);
}

static void test_senml_values(void **state)
{
	assert_int_equal(parse("[{\"bn\":\"d:\",\"bv\":100,\"n\":\"a\",\"v\":1.5},{\"n\":\"b\",\"v\":-1},"
			"{\"bv\":0,\"n\":\"c\",\"v\":7}]"), IP_OK);
	assert_true(rd[0].value == 101.5);
	assert_true(rd[1].value == 99.0);
	assert_true(rd[2].value == 7.0);

	expect_reading("[{\"n\":\"a\",\"vs\":\"on\"}]", IP_R_WRONG_TYPE);
	assert_non_null(strstr(rd[0].detail, "vs"));
	expect_reading("[{\"n\":\"a\",\"vb\":true}]", IP_R_WRONG_TYPE);
	expect_reading("[{\"n\":\"a\",\"vd\":\"aGk\"}]", IP_R_WRONG_TYPE);
	expect_reading("[{\"n\":\"a\",\"v\":1,\"vs\":\"1\"}]", IP_R_WRONG_TYPE);
	expect_reading("[{\"n\":\"a\",\"v\":\"1\"}]", IP_R_WRONG_TYPE);
	expect_reading("[{\"n\":\"a\",\"v\":null}]", IP_R_WRONG_TYPE);
	expect_reading("[{\"n\":\"a\",\"v\":[1]}]", IP_R_WRONG_TYPE);
	expect_reading("[{\"n\":\"a\"}]", IP_R_MISSING_FIELD);
	assert_string_equal(rd[0].detail, "v is missing");
	expect_reading("[{\"n\":\"a\",\"s\":12}]", IP_R_MISSING_FIELD);       /* a sum alone */
	expect_reading("[{\"n\":\"a\",\"bv\":5}]", IP_R_MISSING_FIELD);       /* a base value alone */
	expect_reading("[{\"n\":\"a\",\"v\":1e999}]", IP_R_NON_FINITE_VALUE);
	expect_reading("[{\"n\":\"a\",\"bv\":1e308,\"v\":1e308}]", IP_R_NON_FINITE_VALUE);
	expect_reading("[{\"n\":\"a\",\"bv\":-1e999,\"v\":1}]", IP_R_NON_FINITE_VALUE);
	expect_reading("[{\"n\":\"a\",\"bv\":\"5\",\"v\":1}]", IP_R_WRONG_TYPE);

	/* a bad bv stays with the later records until replaced */
	assert_int_equal(parse("[{\"n\":\"a\",\"bv\":\"x\",\"v\":1},{\"n\":\"b\",\"v\":2},{\"n\":\"c\",\"bv\":1,\"v\":3}]"), IP_OK);
	assert_int_equal(rd[0].reason, IP_R_WRONG_TYPE);
	assert_int_equal(rd[1].reason, IP_R_WRONG_TYPE);
	assert_non_null(strstr(rd[1].detail, "bv"));
	assert_int_equal(rd[2].reason, IP_OK);
	assert_true(rd[2].value == 4.0);
}

static void test_senml_units(void **state)
{
	assert_int_equal(parse("[{\"bu\":\"Cel\",\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"u\":\"K\",\"v\":2},{\"n\":\"c\",\"v\":3},"
			"{\"bu\":\"\",\"n\":\"d\",\"v\":4}]"), IP_OK);
	assert_string_equal(rd[0].unit, "Cel");
	assert_string_equal(rd[1].unit, "K");
	assert_string_equal(rd[2].unit, "Cel");
	assert_string_equal(rd[3].unit, "");

	expect_reading("[{\"n\":\"a\",\"u\":5,\"v\":1}]", IP_R_WRONG_TYPE);
	expect_reading("[{\"n\":\"a\",\"u\":\"1234567890123456\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"n\":\"a\",\"u\":\"\\u001b[31m\",\"v\":1}]", IP_R_ID_INVALID);
	expect_reading("[{\"n\":\"a\",\"bu\":true,\"v\":1}]", IP_R_WRONG_TYPE);

	/* a bad bu is overridden by a record's own u, and replaced by the next bu */
	assert_int_equal(parse("[{\"n\":\"a\",\"bu\":[],\"v\":1},{\"n\":\"b\",\"u\":\"W\",\"v\":2},{\"n\":\"c\",\"v\":3},"
			"{\"n\":\"d\",\"bu\":\"V\",\"v\":4}]"), IP_OK);
	assert_int_equal(rd[0].reason, IP_R_WRONG_TYPE);
	assert_non_null(strstr(rd[0].detail, "bu"));
	assert_int_equal(rd[1].reason, IP_OK);
	assert_string_equal(rd[1].unit, "W");
	assert_int_equal(rd[2].reason, IP_R_WRONG_TYPE);
	assert_int_equal(rd[3].reason, IP_OK);
	assert_string_equal(rd[3].unit, "V");
}

static void test_senml_time(void **state)
{
	/* no time anywhere: "roughly now", flagged */
	assert_int_equal(parse("[{\"n\":\"a\",\"v\":1}]"), IP_OK);
	assert_true(rd[0].ts_missing);
	assert_true(rd[0].ts_ms == NOW);

	/* relative times, RFC 8428 section 4.5.3 */
	assert_int_equal(parse("[{\"n\":\"a\",\"v\":1,\"t\":0},{\"n\":\"a\",\"v\":1,\"t\":-10},{\"n\":\"a\",\"v\":1,\"t\":-0.25},"
			"{\"n\":\"a\",\"v\":1,\"t\":5},{\"bt\":-60,\"n\":\"a\",\"v\":1},{\"n\":\"a\",\"v\":1,\"t\":30}]"), IP_OK);
	assert_true(rd[0].ts_ms == NOW);
	assert_false(rd[0].ts_missing);
	assert_true(rd[1].ts_ms == NOW - 10000);
	assert_true(rd[2].ts_ms == NOW - 250);
	assert_true(rd[3].ts_ms == NOW + 5000);
	assert_true(rd[4].ts_ms == NOW - 60000);
	assert_false(rd[4].ts_missing);
	assert_true(rd[5].ts_ms == NOW - 30000);

	/* absolute: bt + t, fractional seconds, and the 2^28 boundary */
	assert_int_equal(parse("[{\"bt\":1673456789,\"n\":\"a\",\"v\":1},{\"n\":\"a\",\"v\":1,\"t\":0.5},"
			"{\"n\":\"a\",\"v\":1,\"t\":-1.001},{\"bt\":268435456,\"n\":\"a\",\"v\":1},"
			"{\"bt\":268435455,\"n\":\"a\",\"v\":1},{\"bt\":0,\"n\":\"a\",\"v\":1,\"t\":1673456789.123}]"), IP_OK);
	assert_true(rd[0].ts_ms == 1673456789000LL);
	assert_true(rd[1].ts_ms == 1673456789500LL);
	assert_true(rd[2].ts_ms == 1673456787999LL);
	assert_true(rd[3].ts_ms == 268435456000LL);
	assert_true(rd[4].ts_ms == NOW + 268435455000LL);
	assert_true(rd[5].ts_ms == 1673456789123LL);
	for(size_t i = 0; i < 6; i++) assert_false(rd[i].ts_missing);

	expect_reading("[{\"n\":\"a\",\"v\":1,\"t\":\"2023-01-11T17:06:29Z\"}]", IP_R_BAD_TIMESTAMP);
	expect_reading("[{\"n\":\"a\",\"v\":1,\"t\":null}]", IP_R_BAD_TIMESTAMP);
	expect_reading("[{\"n\":\"a\",\"v\":1,\"t\":1e999}]", IP_R_BAD_TIMESTAMP);
	expect_reading("[{\"n\":\"a\",\"v\":1,\"t\":-1e12}]", IP_R_BAD_TIMESTAMP);   /* before 1970 */
	expect_reading("[{\"n\":\"a\",\"v\":1,\"t\":1e300}]", IP_R_BAD_TIMESTAMP);
	expect_reading("[{\"n\":\"a\",\"v\":1,\"bt\":253402300800}]", IP_R_BAD_TIMESTAMP);
	expect_reading("[{\"n\":\"a\",\"v\":1,\"bt\":1e308,\"t\":1e308}]", IP_R_BAD_TIMESTAMP);
	expect_reading("[{\"n\":\"a\",\"v\":1,\"bt\":-1e999}]", IP_R_BAD_TIMESTAMP);

	/* a bad bt refuses its record and the later ones until replaced */
	assert_int_equal(parse("[{\"n\":\"a\",\"v\":1,\"bt\":\"x\"},{\"n\":\"b\",\"v\":2,\"t\":1},"
			"{\"n\":\"c\",\"v\":3,\"bt\":1673456789}]"), IP_OK);
	assert_int_equal(rd[0].reason, IP_R_BAD_TIMESTAMP);
	assert_int_equal(rd[1].reason, IP_R_BAD_TIMESTAMP);
	assert_non_null(strstr(rd[1].detail, "bt"));
	assert_int_equal(rd[2].reason, IP_OK);
	assert_true(rd[2].ts_ms == 1673456789000LL);
}

static void test_senml_pack_errors(void **state)
{
	expect_refused("[]", IP_R_MALFORMED_PAYLOAD);
	expect_refused("[{\"n\":\"a\",\"v\":1},42]", IP_R_MALFORMED_PAYLOAD);
	expect_refused("[{\"n\":\"a\",\"v\":1},[]]", IP_R_MALFORMED_PAYLOAD);
	/* a newer version must not be used; ours and older are fine */
	expect_refused("[{\"bver\":11,\"n\":\"a\",\"v\":1}]", IP_R_MALFORMED_PAYLOAD);
	expect_refused("[{\"n\":\"a\",\"v\":1},{\"bver\":13,\"n\":\"a\",\"v\":1}]", IP_R_MALFORMED_PAYLOAD);
	expect_refused("[{\"bver\":\"10\",\"n\":\"a\",\"v\":1}]", IP_R_MALFORMED_PAYLOAD);
	expect_refused("[{\"bver\":0,\"n\":\"a\",\"v\":1}]", IP_R_MALFORMED_PAYLOAD);
	expect_reading("[{\"bver\":10,\"n\":\"a\",\"v\":1}]", IP_OK);
	expect_reading("[{\"bver\":5,\"n\":\"a\",\"v\":1}]", IP_OK);
	/* must-understand labels are an error, other unknown labels are ignored */
	expect_refused("[{\"n\":\"a\",\"v\":1,\"foo_\":1}]", IP_R_MALFORMED_PAYLOAD);
	expect_refused("[{\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"v\":2,\"_\":0}]", IP_R_MALFORMED_PAYLOAD);
	expect_reading("[{\"n\":\"a\",\"v\":1,\"foo\":1,\"vx\":1,\"bx\":1,\"nn\":1,\"ut\":10,\"s\":5,\"bs\":1,\"ct\":\"x\",\"\":3}]", IP_OK);
}

/* ---- input robustness ---- */

static void test_not_nul_terminated(void **state)
{
	static const char text[] = "{\"value\":12}garbage";

	/* the JSON ends exactly at len */
	assert_int_equal(parse_buf(text, 12, CAP), IP_OK);
	assert_true(rd[0].value == 12.0);
	/* len cuts the number short: "1" */
	assert_int_equal(parse_buf("{\"value\":12}", 10, CAP), IP_R_MALFORMED_PAYLOAD);
	/* cut in every possible place: never a crash or an over-read, never accepted */
	static const char ref[] = "{\"deviceId\":\"temp-007\",\"sensorId\":\"temp\",\"value\":22.5,\"ts\":1673456789000}";
	for(size_t n = 0; n < sizeof(ref) - 1; n++){
		assert_int_equal(parse_buf(ref, n, CAP), IP_R_MALFORMED_PAYLOAD);
	}
	static const char senml[] = "[{\"bn\":\"d:\",\"bt\":1.6e9,\"n\":\"t\",\"u\":\"Cel\",\"v\":1},{\"n\":\"h\",\"vs\":\"x\"}]";
	for(size_t n = 0; n < sizeof(senml) - 1; n++){
		assert_int_equal(parse_buf(senml, n, CAP), IP_R_MALFORMED_PAYLOAD);
	}
	assert_int_equal(parse_buf(senml, sizeof(senml) - 1, CAP), IP_OK);
}

static void test_garbage(void **state)
{
	unsigned char buf[256];
	uint32_t x = 12345;

	assert_int_equal(parse_buf("\0\0\0\0", 4, CAP), IP_R_MALFORMED_PAYLOAD);
	assert_int_equal(parse_buf("\xff\xfe{\"value\":1}", 13, CAP), IP_R_MALFORMED_PAYLOAD);
	/* cJSON skips every byte <= 0x20 between tokens, NUL included: lenient, but harmless */
	assert_int_equal(parse_buf("{\"value\":1\0}", 12, CAP), IP_OK);
	assert_int_equal(parse_buf("{\x01\"value\":1}", 12, CAP), IP_OK);
	/* pseudo-random bytes, with a plausible first byte half the time */
	for(int round = 0; round < 2000; round++){
		size_t n = 1 + round % sizeof(buf);

		for(size_t i = 0; i < n; i++){
			x = x*1103515245u + 12345u;
			buf[i] = (unsigned char)(x >> 16);
		}
		if(round & 1) buf[0] = (round & 2) ? '{' : '[';
		(void)parse_buf((const char *)buf, n, CAP);
	}
}

static void test_deep_nesting(void **state)
{
	enum { DEPTH = 5000 };
	size_t cap = 32 + 2*DEPTH;
	char *json = malloc(cap);
	size_t off;

	assert_non_null(json);
	/* an ignored key nested 500 deep: parsed (below cJSON's limit) and skipped */
	off = (size_t)sprintf(json, "{\"value\":1,\"x\":");
	for(int i = 0; i < 500; i++) json[off++] = '[';
	for(int i = 0; i < 500; i++) json[off++] = ']';
	json[off++] = '}';
	json[off] = '\0';
	assert_int_equal(parse(json), IP_OK);

	/* past cJSON's nesting limit: refused, without a stack overflow */
	off = (size_t)sprintf(json, "{\"value\":1,\"x\":");
	for(int i = 0; i < DEPTH; i++) json[off++] = '[';
	for(int i = 0; i < DEPTH; i++) json[off++] = ']';
	json[off++] = '}';
	json[off] = '\0';
	expect_refused(json, IP_R_MALFORMED_PAYLOAD);

	/* unterminated deep nesting */
	for(off = 0; off < DEPTH; off++) json[off] = '{' ;
	json[off] = '\0';
	expect_refused(json, IP_R_MALFORMED_PAYLOAD);
	for(off = 0; off < DEPTH; off++) json[off] = '[';
	json[off] = '\0';
	expect_refused(json, IP_R_MALFORMED_PAYLOAD);

	/* nesting where a value belongs */
	off = (size_t)sprintf(json, "{\"readings\":{\"t\":");
	for(int i = 0; i < 100; i++) json[off++] = '[';
	for(int i = 0; i < 100; i++) json[off++] = ']';
	off += (size_t)sprintf(json + off, ",\"h\":{\"value\":{\"value\":{\"value\":1}}}}}");
	assert_int_equal(parse(json), IP_OK);
	assert_int_equal(rd[0].reason, IP_R_WRONG_TYPE);
	assert_int_equal(rd[1].reason, IP_R_WRONG_TYPE);
	expect_refused("[[[[{\"n\":\"a\",\"v\":1}]]]]", IP_R_MALFORMED_PAYLOAD);
	free(json);
}

static void test_reentrant(void **state)
{
	static const char msg[] = "[{\"bn\":\"d:\",\"n\":\"t\",\"v\":1,\"t\":-1},{\"n\":\"h\",\"v\":2}]";
	struct ip_reading a[4], b[4];
	struct payload_result ra, rb;

	/* pure: the same input gives the same output, and results never share state */
	assert_int_equal(payload_parse(msg, sizeof(msg) - 1, NOW, a, 4, &ra), IP_OK);
	assert_int_equal(payload_parse("{\"value\":9}", 11, NOW, b, 4, &rb), IP_OK);
	assert_int_equal(payload_parse(msg, sizeof(msg) - 1, NOW, b, 4, &rb), IP_OK);
	assert_int_equal(ra.count, rb.count);
	for(size_t i = 0; i < ra.count; i++){
		assert_string_equal(a[i].device_id, b[i].device_id);
		assert_string_equal(a[i].sensor_id, b[i].sensor_id);
		assert_true(a[i].value == b[i].value);
		assert_true(a[i].ts_ms == b[i].ts_ms);
	}
}

static void test_form_names(void **state)
{
	assert_string_equal(payload_form_name(IP_FORM_NONE), "none");
	assert_string_equal(payload_form_name(IP_FORM_SINGLE), "single");
	assert_string_equal(payload_form_name(IP_FORM_MULTI), "multi");
	assert_string_equal(payload_form_name(IP_FORM_SENML), "senml");
	assert_string_equal(payload_form_name((enum ip_payload_form)99), "none");
	expect_refused("nope", IP_R_MALFORMED_PAYLOAD);
	assert_int_equal(res.form, IP_FORM_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_exact),
		cmocka_unit_test(test_reference_seconds),
		cmocka_unit_test(test_reference_variants),
		cmocka_unit_test(test_missing_ts),
		cmocka_unit_test(test_rfc3339),
		cmocka_unit_test(test_bad_ts),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_wrong_shape),
		cmocka_unit_test(test_value_errors),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_multi),
		cmocka_unit_test(test_multi_bad_among_good),
		cmocka_unit_test(test_multi_errors),
		cmocka_unit_test(test_capacity),
		cmocka_unit_test(test_senml_rfc_example),
		cmocka_unit_test(test_senml_names),
		cmocka_unit_test(test_senml_name_errors),
		cmocka_unit_test(test_senml_values),
		cmocka_unit_test(test_senml_units),
		cmocka_unit_test(test_senml_time),
		cmocka_unit_test(test_senml_pack_errors),
		cmocka_unit_test(test_not_nul_terminated),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_reentrant),
		cmocka_unit_test(test_form_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
