#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "topic.h"

static struct topic_set set_of(const char *filters)
{
	struct topic_set s;
	char err[256];
	if(!topic_set_parse(&s, filters, err, sizeof(err))) fail_msg("%s: %s", filters, err);
	return s;
}

static void test_match(void **state)
{
	static const struct { const char *filter, *topic; bool match; } cases[] = {
		{"devices/+/telemetry", "devices/d1/telemetry", true},
		{"devices/+/telemetry", "devices//telemetry", true},
		{"devices/+/telemetry", "devices/d1/telemetry/x", false},
		{"devices/+/telemetry", "devices/d1", false},
		{"devices/+/telemetry", "devices/d1/telemetryx", false},
		{"devices/+/telemetry", "Devices/d1/telemetry", false},
		{"devices/#", "devices", true},
		{"devices/#", "devices/a/b/c", true},
		{"devices/#", "devicesx/a", false},
		{"#", "anything/at/all", true},
		{"#", "$SYS/broker/uptime", false},
		{"+/+", "a/b", true},
		{"+/+", "a", false},
		{"+", "/", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/", false},
		{"+/+/telemetry", "$SYS/x/telemetry", false},
	};
	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		struct topic_set s = set_of(cases[i].filter);
		if(topic_set_match(&s, cases[i].topic) != cases[i].match){
			fail_msg("%s vs %s: expected %d", cases[i].filter, cases[i].topic, cases[i].match);
		}
		topic_set_free(&s);
	}
}

static void test_several_filters(void **state)
{
	struct topic_set s = set_of("devices/+/telemetry  sensors/#\tplant/line1/+");
	assert_int_equal(s.n, 3);
	assert_true(topic_set_match(&s, "devices/x/telemetry"));
	assert_true(topic_set_match(&s, "sensors/a/b"));
	assert_true(topic_set_match(&s, "plant/line1/m7"));
	assert_false(topic_set_match(&s, "plant/line2/m7"));
	assert_false(topic_set_match(&s, "alerts/x"));
	topic_set_free(&s);
}

static void test_invalid(void **state)
{
	static const char *const bad[] = {"a/#/b", "a/b#", "a+/b", "##", "", "$SYS/#",
		"1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17"};
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		struct topic_set s;
		char err[256] = "";
		if(topic_set_parse(&s, bad[i], err, sizeof(err))) fail_msg("'%s' accepted", bad[i]);
		assert_true(strlen(err) > 0);
	}
}

static void test_level(void **state)
{
	char out[16];
	assert_true(topic_level("devices/temp-007/telemetry", 1, out, sizeof(out)));
	assert_string_equal(out, "temp-007");
	assert_true(topic_level("devices/temp-007/telemetry", 0, out, sizeof(out)));
	assert_string_equal(out, "devices");
	assert_true(topic_level("devices/temp-007/telemetry", 2, out, sizeof(out)));
	assert_string_equal(out, "telemetry");
	assert_false(topic_level("devices/temp-007/telemetry", 3, out, sizeof(out)));
	assert_false(topic_level("devices//telemetry", 1, out, sizeof(out)));
	assert_false(topic_level("devices/a-very-long-device-id/x", 1, out, sizeof(out)));
	assert_false(topic_level("devices/x", -1, out, sizeof(out)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_several_filters),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_level),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
