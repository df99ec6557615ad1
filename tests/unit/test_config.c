#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static bool parse1(const char *k, const char *v, struct config *cfg, char *err, size_t errlen)
{
	struct config_kv kv = {k, v};
	return config_parse(&kv, 1, cfg, err, errlen);
}

static void test_defaults(void **state)
{
	struct config cfg;
	char err[512];
	assert_true(config_parse(NULL, 0, &cfg, err, sizeof(err)));
	assert_int_equal(cfg.topics.n, 1);
	assert_string_equal(cfg.topics.f[0].text, "devices/+/telemetry");
	assert_int_equal(cfg.device_topic_level, 1);
	assert_string_equal(cfg.journal_dir, "/var/lib/mosquitto/iotpipe");
	assert_int_equal(cfg.journal_max_bytes, 1073741824ull);
	assert_int_equal(cfg.journal_full, JOURNAL_FULL_REJECT);
	assert_int_equal(cfg.journal_sync_ms, 1000);
	assert_null(cfg.registry_file);
	assert_null(cfg.file_sink_dir);
	assert_int_equal(cfg.unknown_devices, UNKNOWN_QUARANTINE);
	assert_int_equal(cfg.identity, IDENTITY_NONE);
	assert_int_equal(cfg.window_ms, 300000);
	assert_string_equal(cfg.alert_topic, "alerts/{deviceId}");
	assert_false(cfg.raw_output);
	config_free(&cfg);
}

static void test_values(void **state)
{
	struct config_kv kv[] = {
		{"topics", "a/+/t b/#"}, {"device_topic_level", "-1"}, {"journal_dir", "/tmp/x"},
		{"journal_max_bytes", "64M"}, {"journal_full", "drop_oldest"}, {"window", "90s"},
		{"window_lateness", "250ms"}, {"anomaly_z", "2.5"}, {"alert_topic", ""}, {"raw_output", "true"},
		{"unknown_devices", "accept"}, {"identity", "client_id"}, {"file_sink_dir", "/tmp/y"},
		{"ts_max_age", "2h"}, {"metrics_interval", "0"},
	};
	struct config cfg;
	char err[512];
	assert_true(config_parse(kv, sizeof(kv) / sizeof(kv[0]), &cfg, err, sizeof(err)));
	assert_int_equal(cfg.topics.n, 2);
	assert_int_equal(cfg.device_topic_level, -1);
	assert_string_equal(cfg.journal_dir, "/tmp/x");
	assert_int_equal(cfg.journal_max_bytes, 64ull << 20);
	assert_int_equal(cfg.journal_full, JOURNAL_FULL_DROP_OLDEST);
	assert_int_equal(cfg.window_ms, 90000);
	assert_int_equal(cfg.window_lateness_ms, 250);
	assert_true(cfg.anomaly_z == 2.5);
	assert_string_equal(cfg.alert_topic, "");
	assert_true(cfg.raw_output);
	assert_int_equal(cfg.unknown_devices, UNKNOWN_ACCEPT);
	assert_int_equal(cfg.identity, IDENTITY_CLIENT_ID);
	assert_int_equal(cfg.ts_max_age_ms, 7200000);
	assert_int_equal(cfg.metrics_interval_ms, 0);
	config_free(&cfg);
}

/* Every refusal names the option, says what is wrong, and leaves nothing allocated. */
static void test_errors(void **state)
{
	static const struct { const char *k, *v, *expect; } cases[] = {
		{"nope", "x", "plugin_opt_nope: unknown option"},
		{"journal_max_bytes", "12Q", "plugin_opt_journal_max_bytes: \"12Q\" is not a size"},
		{"journal_max_bytes", "-5", "plugin_opt_journal_max_bytes: \"-5\" is not a size"},
		{"journal_max_bytes", "1k", "plugin_opt_journal_max_bytes: 1k is outside"},
		{"journal_max_bytes", "99999999999999999999", "plugin_opt_journal_max_bytes: \"99999999999999999999\" is not a size"},
		{"journal_full", "sometimes", "plugin_opt_journal_full: \"sometimes\" is not one of reject, drop_oldest"},
		{"unknown_devices", "drop", "plugin_opt_unknown_devices: \"drop\" is not one of quarantine, accept"},
		{"identity", "cert", "plugin_opt_identity: \"cert\" is not one of none, username, client_id"},
		{"window", "5y", "plugin_opt_window: \"5y\" is not a duration"},
		{"window", "10ms", "plugin_opt_window: 10ms is outside"},
		{"journal_sync_ms", "-1", "plugin_opt_journal_sync_ms: \"-1\" is not a duration"},
		{"device_topic_level", "99", "plugin_opt_device_topic_level: \"99\" is not a whole number"},
		{"device_topic_level", "1x", "plugin_opt_device_topic_level: \"1x\" is not a whole number"},
		{"device_topic_level", "3", "plugin_opt_device_topic_level: 3 is beyond the levels of topic filter 'devices/+/telemetry'"},
		{"anomaly_z", "nan", "plugin_opt_anomaly_z: \"nan\" is not a number"},
		{"anomaly_z", "0", "plugin_opt_anomaly_z: \"0\" is not a number from"},
		{"anomaly_min_samples", "1", "plugin_opt_anomaly_min_samples: \"1\" is not a whole number"},
		{"raw_output", "yes please", "plugin_opt_raw_output: \"yes please\" is not true or false"},
		{"topics", "devices/#/x", "plugin_opt_topics: 'devices/#/x': '#' must be the last level"},
		{"topics", "devices/a+/x", "plugin_opt_topics: 'devices/a+/x': '+' and '#' must fill a whole level"},
		{"topics", "$SYS/#", "plugin_opt_topics: '$SYS/#': topics starting with '$' are the broker's own"},
		{"topics", "   ", "plugin_opt_topics: no topic filter given"},
		{"journal_dir", "relative/dir", "plugin_opt_journal_dir: \"relative/dir\" is not an absolute path"},
		{"file_sink_dir", "out", "plugin_opt_file_sink_dir: \"out\" is not an absolute path"},
		{"alert_topic", "alerts/+", "plugin_opt_alert_topic: \"alerts/+\" may not contain wildcards"},
		{"max_payload_bytes", "1", "plugin_opt_max_payload_bytes: 1 is outside"},
		{"window", "", "plugin_opt_window: empty value"},
	};
	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		struct config cfg;
		char err[512] = "";
		if(parse1(cases[i].k, cases[i].v, &cfg, err, sizeof(err))){
			fail_msg("%s=%s was accepted", cases[i].k, cases[i].v);
		}
		if(strncmp(err, cases[i].expect, strlen(cases[i].expect))){
			fail_msg("%s=%s: got \"%s\", want \"%s...\"", cases[i].k, cases[i].v, err, cases[i].expect);
		}
		assert_null(cfg.journal_dir);   /* cleared on failure */
	}
}

static void test_kafka_properties(void **state)
{
	struct config_kv kv[] = {{"kafka_brokers", "127.0.0.1:9092"}, {"kafka.linger.ms", "20"},
		{"kafka.compression.type", "lz4"}, {"kafka_topic_enriched", "plant.enriched"}};
	struct config cfg;
	char err[512];
	assert_true(config_parse(kv, 4, &cfg, err, sizeof(err)));
	assert_int_equal(cfg.kafka_nprops, 2);
	assert_string_equal(cfg.kafka_props[0].key, "linger.ms");
	assert_string_equal(cfg.kafka_props[0].value, "20");
	assert_string_equal(cfg.kafka_props[1].key, "compression.type");
	assert_string_equal(cfg.kafka_topic[1], "plant.enriched");
	assert_string_equal(cfg.kafka_topic[2], "devices.alerts");
	config_free(&cfg);
	assert_false(config_parse(kv + 1, 1, &cfg, err, sizeof(err)));
	assert_string_equal(err, "plugin_opt_kafka.linger.ms: Kafka properties given but no plugin_opt_kafka_brokers");
	struct config_kv empty = {"kafka.", "x"};
	assert_false(config_parse(&empty, 1, &cfg, err, sizeof(err)));
	assert_string_equal(err, "plugin_opt_kafka.: no property name");
}

static void test_sizes_and_durations(void **state)
{
	uint64_t s;
	assert_true(config_parse_size("1048576", &s) && s == 1048576);
	assert_true(config_parse_size("64k", &s) && s == 65536);
	assert_true(config_parse_size("512M", &s) && s == 512ull << 20);
	assert_true(config_parse_size("2GiB", &s) && s == 2ull << 30);
	assert_true(config_parse_size("1GB", &s) && s == 1ull << 30);
	assert_false(config_parse_size("", &s));
	assert_false(config_parse_size("1.5G", &s));
	assert_false(config_parse_size("20000000T", &s));
	int64_t d;
	assert_true(config_parse_duration_ms("250ms", &d) && d == 250);
	assert_true(config_parse_duration_ms("10", &d) && d == 10000);
	assert_true(config_parse_duration_ms("1.5s", &d) && d == 1500);
	assert_true(config_parse_duration_ms("5m", &d) && d == 300000);
	assert_true(config_parse_duration_ms("2h", &d) && d == 7200000);
	assert_true(config_parse_duration_ms("7d", &d) && d == 604800000);
	assert_false(config_parse_duration_ms("5 m", &d));
	assert_false(config_parse_duration_ms("inf", &d));
	assert_false(config_parse_duration_ms("-1s", &d));
}

static void test_check_dirs(void **state)
{
	struct config cfg;
	char err[512];
	char dir[] = "/tmp/iotpipe-test-config-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char sub[128];
	snprintf(sub, sizeof(sub), "%s/a/b/c", dir);
	assert_true(parse1("journal_dir", sub, &cfg, err, sizeof(err)));
	assert_true(config_check_dirs(&cfg, err, sizeof(err)));
	assert_int_equal(access(sub, W_OK), 0);
	config_free(&cfg);
	/* a path under a regular file can never be created, even by root */
	assert_true(parse1("journal_dir", "/etc/passwd/iotpipe", &cfg, err, sizeof(err)));
	assert_false(config_check_dirs(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "plugin_opt_journal_dir: cannot create /etc/passwd"));
	config_free(&cfg);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* The README's option table is the admin's reference: every option with its default must be in it. */
static void test_readme_lists_every_option(void **state)
{
	FILE *f = fopen(IOTPIPE_SOURCE_DIR "/README.md", "r");
	assert_non_null(f);
	static char text[1 << 17];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	const char *name, *def;
	for(size_t i = 0; config_option_at(i, &name, &def); i++){
		char row[256];
		snprintf(row, sizeof(row), "| `%s` | %s%s%s |", name, *def ? "`" : "—", def, *def ? "`" : "");
		if(!strstr(text, row)) fail_msg("README.md has no option row starting \"%s\"", row);
	}
}

/* conf/mosquitto.conf names every option, and what it shows (commented out or not) is accepted */
static void test_example_conf(void **state)
{
	FILE *f = fopen(IOTPIPE_SOURCE_DIR "/conf/mosquitto.conf", "r");
	assert_non_null(f);
	static char lines[128][256];
	struct config_kv kv[128];
	size_t n = 0;
	char line[256];
	while(fgets(line, sizeof(line), f)){
		const char *p = line[0] == '#' ? line + 1 : line;
		if(strncmp(p, "plugin_opt_", 11)) continue;
		assert_true(n < 128);
		snprintf(lines[n], sizeof(lines[n]), "%s", p + 11);
		lines[n][strcspn(lines[n], "\r\n")] = '\0';
		char *sp = strchr(lines[n], ' ');
		if(!sp) fail_msg("conf/mosquitto.conf: no value in \"%s\"", line);
		*sp = '\0';
		kv[n] = (struct config_kv){lines[n], sp + 1};
		n++;
	}
	fclose(f);
	const char *name, *def;
	for(size_t i = 0; config_option_at(i, &name, &def); i++){
		bool found = false;
		for(size_t k = 0; k < n && !found; k++) found = !strcmp(kv[k].key, name);
		if(!found) fail_msg("conf/mosquitto.conf does not show plugin_opt_%s", name);
	}
	struct config cfg;
	char err[512];
	if(!config_parse(kv, n, &cfg, err, sizeof(err))) fail_msg("conf/mosquitto.conf: %s", err);
	config_free(&cfg);
}

/* "off" is the one file_sink_dir that is not a path (pipeline.c then starts no file sink) */
static void test_file_sink_off(void **state)
{
	(void)state;
	struct config cfg;
	char err[512];
	struct config_kv kv[] = {{"file_sink_dir", "off"}};
	assert_true(config_parse(kv, 1, &cfg, err, sizeof(err)));
	assert_string_equal(cfg.file_sink_dir, "off");
	config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_file_sink_off),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_kafka_properties),
		cmocka_unit_test(test_sizes_and_durations),
		cmocka_unit_test(test_check_dirs),
		cmocka_unit_test(test_readme_lists_every_option),
		cmocka_unit_test(test_example_conf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
