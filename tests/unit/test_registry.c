#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry.h"

/* The example registry ships in conf/; find it from this file's path so the test runs from any
 * build directory (CMake passes absolute source paths). */
static void example_path(char *buf, size_t len)
{
	const char *me = __FILE__;
	const char *tail = strstr(me, "tests/unit/test_registry.c");
	int prefix = tail ? (int)(tail - me) : 0;

	snprintf(buf, len, "%.*sconf/registry.example.json", prefix, me);
}

static struct ip_registry *parse_ok(const char *json)
{
	struct ip_registry *r = NULL;
	char err[512] = "";

	if(!registry_parse_json(json, strlen(json), &r, err, sizeof(err))){
		fail_msg("unexpected parse error: %s\nfor: %s", err, json);
	}
	assert_non_null(r);
	return r;
}

static void test_example_file(void **state)
{
	struct ip_registry *r = NULL;
	const struct ip_device_info *d;
	const struct ip_sensor_info *s;
	char path[4096], err[512] = "";

	example_path(path, sizeof(path));
	if(!registry_load_file(path, &r, err, sizeof(err))) fail_msg("%s: %s", path, err);
	assert_int_equal(registry_count(r), 5);
	assert_true(registry_version(r) > 0);

	d = registry_find(r, "temp-007");
	assert_non_null(d);
	assert_string_equal(d->device_id, "temp-007");
	assert_string_equal(d->location, "Berlin");
	assert_string_equal(d->zone, "z1");
	assert_string_equal(d->device_type, "thermometer");
	assert_false(d->any_sensor);
	assert_int_equal(d->nsensors, 1);
	s = registry_sensor(d, "temp");
	assert_non_null(s);
	assert_ptr_equal(s, registry_sensor(d, ""));
	assert_string_equal(s->unit, "Cel");
	assert_true(s->min == -50 && s->max == 150 && s->threshold == 25 && s->anomaly_z == 3);
	assert_null(registry_sensor(d, "hum"));

	/* the first listed sensor is the default, later ones are found by name */
	d = registry_find(r, "hum-012");
	assert_non_null(d);
	assert_int_equal(d->nsensors, 2);
	assert_string_equal(registry_sensor(d, "")->sensor_id, "hum");
	assert_string_equal(registry_sensor(d, NULL)->sensor_id, "hum");
	s = registry_sensor(d, "temp");
	assert_non_null(s);
	assert_true(s->min == -40 && s->max == 85);
	assert_true(isnan(s->threshold));
	assert_true(s->anomaly_z == 0);

	d = registry_find(r, "meter-101");
	s = registry_sensor(d, "power");
	assert_true(s->min == 0 && isinf(s->max) && s->max > 0 && s->threshold == 3500);

	d = registry_find(r, "gw-lab-1");
	assert_non_null(d);
	assert_true(d->any_sensor);
	assert_int_equal(d->nsensors, 0);
	assert_null(d->zone);
	assert_string_equal(d->device_type, "gateway");
	assert_null(registry_sensor(d, ""));
	assert_null(registry_sensor(d, "anything"));

	assert_null(registry_find(r, "temp-008"));

	/* iteration follows the file */
	d = registry_first(r);
	assert_string_equal(d->device_id, "temp-007");
	d = registry_next(d);
	assert_string_equal(d->device_id, "hum-012");
	d = registry_next(registry_next(registry_next(d)));
	assert_string_equal(d->device_id, "gw-lab-1");
	assert_null(registry_next(d));
	assert_null(registry_first(NULL));
	registry_free(r);
}

struct bad_case {
	const char *json;
	const char *err;
};

static const struct bad_case bad_cases[] = {
	{"", "not valid JSON (near byte 0)"},
	{"{\"devices\":[", "not valid JSON (near byte 11)"},
	{"{\"devices\":[]} x", "unexpected data after the JSON document (byte 15)"},
	{"[1]", "not a JSON object"},
	{"{}", "\"devices\" is missing"},
	{"{\"devices\":{}}", "\"devices\" is not an array"},
	{"{\"devices\":null}", "\"devices\" is not an array"},
	{"{\"devices\":[1]}", "devices[0] is not an object"},
	{"{\"devices\":[{}]}", "devices[0]: \"deviceId\" is missing"},
	{"{\"devices\":[{\"deviceId\":7}]}", "devices[0]: \"deviceId\" is not a string"},
	{"{\"devices\":[{\"deviceId\":\"\"}]}", "devices[0]: \"deviceId\" is empty"},
	{"{\"devices\":[{\"deviceId\":\"0123456789012345678901234567890123456789012345678901234567890123\"}]}",
		"devices[0]: \"deviceId\" is 64 bytes or longer"},
	{"{\"devices\":[{\"deviceId\":\"a\\tb\"}]}", "devices[0]: \"deviceId\" contains a control character"},
	{"{\"devices\":[{\"deviceId\":\"a\\u007fb\"}]}", "devices[0]: \"deviceId\" contains a control character"},
	{"{\"devices\":[{\"deviceId\":\"a/b\"}]}", "devices[0]: \"deviceId\" contains '/'"},
	{"{\"devices\":[{\"deviceId\":\"a+\"}]}", "devices[0]: \"deviceId\" contains '+'"},
	{"{\"devices\":[{\"deviceId\":\"#\"}]}", "devices[0]: \"deviceId\" contains '#'"},
	{"{\"devices\":[{\"deviceId\":\"a\"},{\"deviceId\":\"b\"},{\"deviceId\":\"a\"}]}",
		"devices[2] (\"a\"): duplicate \"deviceId\""},
	{"{\"devices\":[{\"deviceId\":\"a\",\"location\":1}]}", "devices[0] (\"a\"): \"location\" is not a string"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"zone\":[]}]}", "devices[0] (\"a\"): \"zone\" is not a string"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"deviceType\":true}]}", "devices[0] (\"a\"): \"deviceType\" is not a string"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":{}}]}", "devices[0] (\"a\"): \"sensors\" is not an array"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[\"t\"]}]}", "devices[0] (\"a\"): sensors[0] is not an object"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"unit\":\"Cel\"}]}]}",
		"devices[0] (\"a\"): sensors[0]: \"sensorId\" is missing"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":1}]}]}",
		"devices[0] (\"a\"): sensors[0]: \"sensorId\" is not a string"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"x/y\"}]}]}",
		"devices[0] (\"a\"): sensors[0]: \"sensorId\" contains '/'"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\"},{\"sensorId\":\"h\"},{\"sensorId\":\"t\"}]}]}",
		"devices[0] (\"a\"): sensors[2] (\"t\"): duplicate \"sensorId\""},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"unit\":5}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"unit\" is not a string"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"unit\":\"0123456789abcdef\"}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"unit\" is 16 bytes or longer"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"max\":\"9\"}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"max\" is not a number"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"threshold\":false}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"threshold\" is not a number"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"anomalyZ\":{}}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"anomalyZ\" is not a number"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"min\":1e999}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"min\" is not a finite number"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"min\":10,\"max\":-10}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"min\" (10) is greater than \"max\" (-10)"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"anomalyZ\":0}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"anomalyZ\" must be greater than 0"},
	{"{\"devices\":[{\"deviceId\":\"a\",\"sensors\":[{\"sensorId\":\"t\",\"anomalyZ\":-2}]}]}",
		"devices[0] (\"a\"): sensors[0] (\"t\"): \"anomalyZ\" must be greater than 0"},
	/* the error names the failing device among good ones */
	{"{\"devices\":[{\"deviceId\":\"temp-6\"},{\"deviceId\":\"temp-7\"},{\"deviceId\":\"temp-8\"},"
		"{\"deviceId\":\"temp-9\",\"sensors\":[{\"sensorId\":\"temp\",\"min\":\"low\"}]}]}",
		"devices[3] (\"temp-9\"): sensors[0] (\"temp\"): \"min\" is not a number"},
};

static void test_errors(void **state)
{
	for(size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++){
		struct ip_registry *r = (struct ip_registry *)&r;   /* must be reset to NULL */
		char err[512] = "";

		if(registry_parse_json(bad_cases[i].json, strlen(bad_cases[i].json), &r, err, sizeof(err))){
			fail_msg("case %zu parsed: %s", i, bad_cases[i].json);
		}
		assert_null(r);
		if(strcmp(err, bad_cases[i].err) != 0){
			fail_msg("case %zu: %s\n  got:      %s\n  expected: %s", i, bad_cases[i].json, err, bad_cases[i].err);
		}
	}
}

/* A caller without an error buffer still gets false. */
static void test_error_without_buffer(void **state)
{
	struct ip_registry *r;
	char small[8];

	assert_false(registry_parse_json("{}", 2, &r, NULL, 0));
	assert_false(registry_parse_json("{}", 2, &r, small, sizeof(small)));
	assert_string_equal(small, "\"device");   /* truncated, terminated */
}

static void test_unset_fields(void **state)
{
	struct ip_registry *r = parse_ok(
		"{\"devices\":["
		"{\"deviceId\":\"bare\"},"
		"{\"deviceId\":\"nulls\",\"location\":null,\"zone\":null,\"deviceType\":null,\"sensors\":null},"
		"{\"deviceId\":\"empty-list\",\"sensors\":[]},"
		"{\"deviceId\":\"s\",\"future\":{\"x\":1},\"sensors\":[{\"sensorId\":\"v\",\"unit\":null,\"min\":null,"
		"\"max\":null,\"threshold\":null,\"anomalyZ\":null,\"comment\":\"ignored\"}]}"
		"],\"comment\":\"unknown keys are ignored\"}\n\t ");
	const struct ip_device_info *d;
	const struct ip_sensor_info *s;

	assert_int_equal(registry_count(r), 4);
	d = registry_find(r, "bare");
	assert_non_null(d);
	assert_null(d->location);
	assert_null(d->zone);
	assert_null(d->device_type);
	assert_true(d->any_sensor);
	assert_int_equal(d->nsensors, 0);
	assert_null(d->sensors);

	d = registry_find(r, "nulls");
	assert_null(d->location);
	assert_true(d->any_sensor);

	/* an empty list behaves like no list (see registry.c) */
	assert_true(registry_find(r, "empty-list")->any_sensor);

	d = registry_find(r, "s");
	assert_false(d->any_sensor);
	s = registry_sensor(d, "");
	assert_non_null(s);
	assert_string_equal(s->sensor_id, "v");
	assert_string_equal(s->unit, "");
	assert_true(isinf(s->min) && s->min < 0);
	assert_true(isinf(s->max) && s->max > 0);
	assert_true(isnan(s->threshold));
	assert_true(s->anomaly_z == 0);
	registry_free(r);
}

/* The buffer is not a C string: a NUL may be missing, and bytes after len must be ignored. */
static void test_length_bounded(void **state)
{
	const char doc[] = "{\"devices\":[{\"deviceId\":\"a\"}]}GARBAGE";
	size_t len = strlen(doc) - strlen("GARBAGE");
	char *exact = malloc(len);   /* no terminator at all: ASan catches reads past it */
	struct ip_registry *r = NULL;
	char err[256];

	assert_non_null(exact);
	memcpy(exact, doc, len);
	assert_true(registry_parse_json(exact, len, &r, err, sizeof(err)));
	assert_non_null(registry_find(r, "a"));
	registry_free(r);
	/* one byte short */
	assert_false(registry_parse_json(exact, len - 1, &r, err, sizeof(err)));
	free(exact);
}

static void test_lookups(void **state)
{
	struct ip_registry *r = parse_ok(
		"{\"devices\":[{\"deviceId\":\"d1\",\"sensors\":[{\"sensorId\":\"a\"},{\"sensorId\":\"b\"},{\"sensorId\":\"c\"}]},"
		"{\"deviceId\":\"D1\"}]}");
	char huge[4096];
	const struct ip_device_info *d;

	d = registry_find(r, "d1");
	assert_non_null(d);
	assert_ptr_equal(registry_find(r, "D1")->device_id, registry_find(r, "D1")->device_id);
	assert_ptr_not_equal(d, registry_find(r, "D1"));   /* ids are case-sensitive */
	assert_null(registry_find(r, "d"));
	assert_null(registry_find(r, "d1 "));
	assert_null(registry_find(r, ""));
	assert_null(registry_find(r, NULL));
	assert_null(registry_find(NULL, "d1"));
	memset(huge, 'x', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	assert_null(registry_find(r, huge));

	assert_string_equal(registry_sensor(d, "")->sensor_id, "a");
	assert_string_equal(registry_sensor(d, "b")->sensor_id, "b");
	assert_string_equal(registry_sensor(d, "c")->sensor_id, "c");
	assert_null(registry_sensor(d, "B"));
	assert_null(registry_sensor(d, "d"));
	assert_null(registry_sensor(NULL, "a"));
	registry_free(r);
}

static void test_builder(void **state)
{
	struct ip_registry *r = registry_new();
	struct ip_device_info *d;
	struct ip_sensor_info s;
	char err[256];
	uint64_t v;

	assert_non_null(r);
	assert_int_equal(registry_version(r), 0);
	assert_int_equal(registry_count(r), 0);

	d = registry_add_device(r, "dev-1", "Paris", NULL, "meter", err, sizeof(err));
	assert_non_null(d);
	assert_string_equal(d->location, "Paris");
	assert_null(d->zone);
	assert_true(d->any_sensor);

	assert_null(registry_add_device(r, "dev-1", NULL, NULL, NULL, err, sizeof(err)));
	assert_string_equal(err, "duplicate \"deviceId\"");
	assert_null(registry_add_device(r, "a#b", NULL, NULL, NULL, err, sizeof(err)));
	assert_string_equal(err, "\"deviceId\" contains '#'");
	assert_null(registry_add_device(r, NULL, NULL, NULL, NULL, err, sizeof(err)));
	assert_string_equal(err, "\"deviceId\" is empty");

	registry_sensor_init(&s);
	assert_string_equal(s.sensor_id, "");
	assert_true(isinf(s.min) && isinf(s.max) && isnan(s.threshold) && s.anomaly_z == 0);
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_string_equal(err, "\"sensorId\" is empty");

	strcpy(s.sensor_id, "power");
	strcpy(s.unit, "W");
	s.min = 0;
	assert_true(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_false(d->any_sensor);
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_string_equal(err, "duplicate \"sensorId\"");

	strcpy(s.sensor_id, "energy");
	s.min = 5;
	s.max = 1;
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_string_equal(err, "\"min\" (5) is greater than \"max\" (1)");
	s.max = NAN;
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_string_equal(err, "\"min\" or \"max\" is NaN");
	s.max = 10;
	s.anomaly_z = -1;
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	s.anomaly_z = NAN;
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	s.anomaly_z = 2.5;
	memset(s.unit, 'u', sizeof(s.unit));   /* not terminated */
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_string_equal(err, "\"unit\" is not terminated");
	strcpy(s.unit, "kWh");
	memset(s.sensor_id, 'x', sizeof(s.sensor_id));
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_string_equal(err, "\"sensorId\" is not terminated");
	strcpy(s.sensor_id, "energy");
	assert_true(registry_add_sensor(d, &s, err, sizeof(err)));

	/* failed adds left nothing behind */
	assert_int_equal(d->nsensors, 2);
	assert_int_equal(registry_count(r), 1);
	assert_string_equal(registry_sensor(d, "")->sensor_id, "power");
	assert_true(registry_sensor(d, "energy")->anomaly_z == 2.5);
	assert_ptr_equal(registry_find(r, "dev-1"), d);

	/* the linear sensor scan stays bounded */
	d = registry_add_device(r, "many", NULL, NULL, NULL, err, sizeof(err));
	assert_non_null(d);
	registry_sensor_init(&s);
	for(int i = 0; i < IP_REGISTRY_MAX_SENSORS; i++){
		snprintf(s.sensor_id, sizeof(s.sensor_id), "s%d", i);
		assert_true(registry_add_sensor(d, &s, err, sizeof(err)));
	}
	strcpy(s.sensor_id, "one-more");
	assert_false(registry_add_sensor(d, &s, err, sizeof(err)));
	assert_string_equal(err, "more than 1024 sensors");
	assert_int_equal(d->nsensors, IP_REGISTRY_MAX_SENSORS);

	registry_seal(r);
	v = registry_version(r);
	assert_true(v > 0);
	registry_seal(r);
	assert_int_equal(registry_version(r), v);
	/* sealed means immutable */
	assert_null(registry_add_device(r, "dev-2", NULL, NULL, NULL, err, sizeof(err)));
	assert_string_equal(err, "the snapshot is sealed");
	registry_free(r);
	registry_free(NULL);
}

static void test_versions_increase(void **state)
{
	struct ip_registry *a = parse_ok("{\"devices\":[]}");
	struct ip_registry *b = parse_ok("{\"devices\":[]}");
	struct ip_registry *c = registry_new();

	assert_int_equal(registry_count(a), 0);
	assert_true(registry_version(b) > registry_version(a));
	registry_seal(c);
	assert_true(registry_version(c) > registry_version(b));
	registry_free(a);
	registry_free(b);
	registry_free(c);
}

static void test_id_check(void **state)
{
	char id[IP_ID_MAX + 1];

	assert_null(registry_id_check("temp-007"));
	assert_null(registry_id_check("Ünïcode.ok_too:1"));
	memset(id, 'a', IP_ID_MAX);
	id[IP_ID_MAX] = '\0';
	assert_string_equal(registry_id_check(id), "is 64 bytes or longer");
	id[IP_ID_MAX - 1] = '\0';   /* 63 bytes: the longest that fits with its NUL */
	assert_null(registry_id_check(id));
	assert_string_equal(registry_id_check(""), "is empty");
	assert_string_equal(registry_id_check(NULL), "is empty");
	assert_string_equal(registry_id_check("a\nb"), "contains a control character");
}

static void test_load_file_errors(void **state)
{
	struct ip_registry *r;
	char err[512];
	char path[] = "/tmp/test_registry_XXXXXX";
	int fd;

	assert_false(registry_load_file("/nonexistent/registry.json", &r, err, sizeof(err)));
	assert_null(r);
	assert_string_equal(err, "cannot open: No such file or directory");
	assert_false(registry_load_file("/tmp", &r, err, sizeof(err)));
	assert_string_equal(err, "not a regular file");

	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_false(registry_load_file(path, &r, err, sizeof(err)));
	assert_string_equal(err, "not valid JSON (near byte 0)");
	assert_int_equal(write(fd, "{\"devices\":[{\"deviceId\":\"x\"}]}\n", 31), 31);
	close(fd);
	assert_true(registry_load_file(path, &r, err, sizeof(err)));
	assert_int_equal(registry_count(r), 1);
	registry_free(r);
	unlink(path);
}

#define LARGE_N 10000

static void test_large(void **state)
{
	size_t cap = (size_t)LARGE_N * 160 + 64, len = 0;
	char *json = malloc(cap);
	struct ip_registry *r = NULL, *b;
	char err[512], id[IP_ID_MAX];

	assert_non_null(json);
	len += (size_t)snprintf(json + len, cap - len, "{\"devices\":[");
	for(int i = 0; i < LARGE_N; i++){
		len += (size_t)snprintf(json + len, cap - len,
				"%s{\"deviceId\":\"dev-%05d\",\"zone\":\"z%d\",\"sensors\":[{\"sensorId\":\"s\",\"min\":%d,\"max\":%d}]}",
				i ? "," : "", i, i % 7, -i, i);
	}
	len += (size_t)snprintf(json + len, cap - len, "]}");
	assert_true(len < cap);
	if(!registry_parse_json(json, len, &r, err, sizeof(err))) fail_msg("%s", err);
	free(json);

	assert_int_equal(registry_count(r), LARGE_N);
	for(int i = 0; i < LARGE_N; i++){
		const struct ip_device_info *d;
		const struct ip_sensor_info *s;

		snprintf(id, sizeof(id), "dev-%05d", i);
		d = registry_find(r, id);
		assert_non_null(d);
		assert_string_equal(d->device_id, id);
		s = registry_sensor(d, "");
		assert_true(s->min == -i && s->max == i);
		snprintf(id, sizeof(id), "dev-%05d", i + LARGE_N);
		assert_null(registry_find(r, id));
	}
	registry_free(r);

	/* the builder at the same scale */
	b = registry_new();
	for(int i = 0; i < LARGE_N; i++){
		snprintf(id, sizeof(id), "b-%d", i);
		assert_non_null(registry_add_device(b, id, NULL, NULL, NULL, err, sizeof(err)));
	}
	registry_seal(b);
	assert_int_equal(registry_count(b), LARGE_N);
	assert_non_null(registry_find(b, "b-9999"));
	registry_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_error_without_buffer),
		cmocka_unit_test(test_unset_fields),
		cmocka_unit_test(test_length_bounded),
		cmocka_unit_test(test_lookups),
		cmocka_unit_test(test_builder),
		cmocka_unit_test(test_versions_increase),
		cmocka_unit_test(test_id_check),
		cmocka_unit_test(test_load_file_errors),
		cmocka_unit_test(test_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
