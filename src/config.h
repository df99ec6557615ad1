/* Every plugin_opt_* the plugin understands, parsed and validated in one place (DESIGN.md section 6).
 * An unknown name or a bad value is an error naming the option, and the broker refuses to start. */
#ifndef IOTPIPE_CONFIG_H
#define IOTPIPE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "topic.h"

enum unknown_devices_policy { UNKNOWN_QUARANTINE, UNKNOWN_ACCEPT };
enum identity_binding { IDENTITY_NONE, IDENTITY_USERNAME, IDENTITY_CLIENT_ID };

struct config {
	struct topic_set topics;
	int64_t device_topic_level;         /* -1: payload only */
	char *journal_dir;
	uint64_t journal_max_bytes;
	enum journal_full_policy journal_full;
	int64_t journal_sync_ms;
	uint64_t max_payload_bytes;
	char *file_sink_dir;                /* NULL: off unless no other sink is on */
	uint64_t file_sink_max_bytes;
	int64_t metrics_interval_ms;        /* $SYS metrics period; 0: off */
	char *registry_file;
	enum unknown_devices_policy unknown_devices;
	enum identity_binding identity;
	int64_t window_ms;
	int64_t window_lateness_ms;
	double anomaly_z;
	int64_t anomaly_min_samples;
	int64_t ts_max_future_ms;
	int64_t ts_max_age_ms;
	char *alert_topic;                  /* "" : off */
	bool raw_output;
	/* Kafka sink (on when kafka_brokers is set) */
	char *kafka_brokers;
	char *kafka_topic[5];               /* per output kind, in enum rec_kind order from REC_RAW */
	struct config_kv *kafka_props;      /* kafka.<property> lines, prefix stripped, in order */
	size_t kafka_nprops;
	/* PostgreSQL sink (on when pg_conninfo is set) */
	char *pg_conninfo;
	int64_t pg_pool_size;
	int64_t pg_batch_rows;
	int64_t pg_flush_ms;
	int64_t hot_retention_ms;
};

struct config_kv {
	const char *key;
	const char *value;
};

/* main thread at start and at reload. On error *cfg is left cleared and err names the option. */
bool config_parse(const struct config_kv *kv, size_t n, struct config *cfg, char *err, size_t errlen);
/* creates journal_dir and file_sink_dir when missing and checks they are writable */
bool config_check_dirs(const struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);

/* The option table, for documentation checks: the i-th option's name and default ("" when none). */
bool config_option_at(size_t i, const char **name, const char **default_value);

/* Value parsers, shared with tools. */
bool config_parse_size(const char *s, uint64_t *out);          /* 1048576, 64k, 512M, 1G, 2GiB */
bool config_parse_duration_ms(const char *s, int64_t *out);    /* 250ms, 10s, 5m, 2h, 7d; a bare number is seconds */

#endif
