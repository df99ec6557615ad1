#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

enum opt_type { T_STRING, T_INT, T_SIZE, T_DURATION, T_ENUM, T_BOOL, T_DOUBLE, T_TOPICS };

struct opt {
	const char *name;
	enum opt_type type;
	size_t offset;
	const char *def;            /* parsed like a user value; NULL: unset */
	const char *const *words;   /* T_ENUM: index = value */
	double min, max;            /* T_INT, T_DOUBLE, T_DURATION (ms), T_SIZE */
};

static const char *const w_full[] = {"reject", "drop_oldest", NULL};
static const char *const w_unknown[] = {"quarantine", "accept", NULL};
static const char *const w_identity[] = {"none", "username", "client_id", NULL};

#define OFF(f) offsetof(struct config, f)
#define DAY_MS (86400.0 * 1000)

/* The public contract: README.md's option table lists exactly these (a unit test checks). */
static const struct opt opts[] = {
	{"topics", T_TOPICS, OFF(topics), "devices/+/telemetry", NULL, 0, 0},
	{"device_topic_level", T_INT, OFF(device_topic_level), "1", NULL, -1, TOPIC_MAX_LEVELS - 1},
	{"journal_dir", T_STRING, OFF(journal_dir), "/var/lib/mosquitto/iotpipe", NULL, 0, 0},
	{"journal_max_bytes", T_SIZE, OFF(journal_max_bytes), "1073741824", NULL, 4.0 * 1024 * 1024, 1e15},
	{"journal_full", T_ENUM, OFF(journal_full), "reject", w_full, 0, 0},
	{"journal_sync_ms", T_DURATION, OFF(journal_sync_ms), "1000ms", NULL, 0, 60000},
	{"max_payload_bytes", T_SIZE, OFF(max_payload_bytes), "65536", NULL, 64, 16.0 * 1024 * 1024},
	{"file_sink_dir", T_STRING, OFF(file_sink_dir), NULL, NULL, 0, 0},
	{"file_sink_max_bytes", T_SIZE, OFF(file_sink_max_bytes), "64M", NULL, 4096, 1e15},
	{"metrics_interval", T_DURATION, OFF(metrics_interval_ms), "10s", NULL, 0, DAY_MS},
	{"registry_file", T_STRING, OFF(registry_file), NULL, NULL, 0, 0},
	{"unknown_devices", T_ENUM, OFF(unknown_devices), "quarantine", w_unknown, 0, 0},
	{"identity", T_ENUM, OFF(identity), "none", w_identity, 0, 0},
	{"window", T_DURATION, OFF(window_ms), "5m", NULL, 1000, DAY_MS},
	{"window_lateness", T_DURATION, OFF(window_lateness_ms), "10s", NULL, 0, DAY_MS},
	{"anomaly_z", T_DOUBLE, OFF(anomaly_z), "3", NULL, 0.5, 1000},
	{"anomaly_min_samples", T_INT, OFF(anomaly_min_samples), "30", NULL, 2, 1000000},
	{"ts_max_future", T_DURATION, OFF(ts_max_future_ms), "5m", NULL, 0, 365 * DAY_MS},
	{"ts_max_age", T_DURATION, OFF(ts_max_age_ms), "7d", NULL, 1000, 36500 * DAY_MS},
	{"alert_topic", T_STRING, OFF(alert_topic), "alerts/{deviceId}", NULL, 0, 0},
	{"raw_output", T_BOOL, OFF(raw_output), "false", NULL, 0, 0},
	{"kafka_brokers", T_STRING, OFF(kafka_brokers), NULL, NULL, 0, 0},
	{"kafka_topic_raw", T_STRING, OFF(kafka_topic[0]), "devices.telemetry", NULL, 0, 0},
	{"kafka_topic_enriched", T_STRING, OFF(kafka_topic[1]), "devices.enriched", NULL, 0, 0},
	{"kafka_topic_alert", T_STRING, OFF(kafka_topic[2]), "devices.alerts", NULL, 0, 0},
	{"kafka_topic_quarantine", T_STRING, OFF(kafka_topic[3]), "devices.quarantine", NULL, 0, 0},
	{"kafka_topic_aggregate", T_STRING, OFF(kafka_topic[4]), "devices.aggregated", NULL, 0, 0},
	{"pg_conninfo", T_STRING, OFF(pg_conninfo), NULL, NULL, 0, 0},
	{"pg_pool_size", T_INT, OFF(pg_pool_size), "2", NULL, 1, 64},
	{"pg_batch_rows", T_INT, OFF(pg_batch_rows), "5000", NULL, 1, 1000000},
	{"pg_flush_ms", T_DURATION, OFF(pg_flush_ms), "200ms", NULL, 1, 60000},
	{"hot_retention", T_DURATION, OFF(hot_retention_ms), "7d", NULL, DAY_MS, 36500 * DAY_MS},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

bool config_option_at(size_t i, const char **name, const char **default_value)
{
	if(i >= NOPTS) return false;
	*name = opts[i].name;
	*default_value = opts[i].def ? opts[i].def : "";
	return true;
}

bool config_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if(!s || *s == '-' || *s == '\0') return false;
	unsigned long long v = strtoull(s, &end, 10);
	if(errno || end == s) return false;
	uint64_t mul = 1;
	if(*end){
		char u = (char)(*end | 0x20);
		if(u == 'k') mul = 1024ull;
		else if(u == 'm') mul = 1024ull * 1024;
		else if(u == 'g') mul = 1024ull * 1024 * 1024;
		else if(u == 't') mul = 1024ull * 1024 * 1024 * 1024;
		else if(u == 'b' && end[1] == '\0') mul = 1;
		else return false;
		if(u != 'b'){
			end++;
			if(!strcasecmp(end, "ib") || !strcasecmp(end, "b")) end += strlen(end);
		}else{
			end++;
		}
		if(*end) return false;
	}
	if(v > UINT64_MAX / mul) return false;
	*out = v * mul;
	return true;
}

bool config_parse_duration_ms(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	if(!s || *s == '-' || *s == '\0') return false;
	double v = strtod(s, &end);
	if(errno || end == s || !isfinite(v) || v < 0) return false;
	double mul;
	if(*end == '\0' || !strcmp(end, "s")) mul = 1000;
	else if(!strcmp(end, "ms")) mul = 1;
	else if(!strcmp(end, "m") || !strcmp(end, "min")) mul = 60000;
	else if(!strcmp(end, "h")) mul = 3600000;
	else if(!strcmp(end, "d")) mul = 86400000;
	else return false;
	if(v * mul > 9e15) return false;
	*out = (int64_t)llround(v * mul);
	return true;
}

static bool set_value(const struct opt *o, struct config *cfg, const char *v, char *err, size_t errlen)
{
	void *field = (char *)cfg + o->offset;
	char why[256] = "";
	switch(o->type){
	case T_STRING: {
		char **p = field;
		free(*p);
		*p = strdup(v);
		return *p != NULL;
	}
	case T_TOPICS: {
		struct topic_set *set = field;
		topic_set_free(set);
		if(topic_set_parse(set, v, why, sizeof(why))) return true;
		snprintf(err, errlen, "plugin_opt_%s: %s", o->name, why);
		return false;
	}
	case T_INT: {
		char *end;
		errno = 0;
		long long x = strtoll(v, &end, 10);
		if(errno || end == v || *end || x < o->min || x > o->max){
			snprintf(err, errlen, "plugin_opt_%s: \"%s\" is not a whole number from %.0f to %.0f",
					o->name, v, o->min, o->max);
			return false;
		}
		*(int64_t *)field = x;
		return true;
	}
	case T_DOUBLE: {
		char *end;
		errno = 0;
		double x = strtod(v, &end);
		if(errno || end == v || *end || !isfinite(x) || x < o->min || x > o->max){
			snprintf(err, errlen, "plugin_opt_%s: \"%s\" is not a number from %g to %g", o->name, v, o->min, o->max);
			return false;
		}
		*(double *)field = x;
		return true;
	}
	case T_SIZE: {
		uint64_t x;
		if(!config_parse_size(v, &x)){
			snprintf(err, errlen, "plugin_opt_%s: \"%s\" is not a size (bytes, or with k, M, G: 64M, 1G)", o->name, v);
			return false;
		}
		if((double)x < o->min || (double)x > o->max){
			snprintf(err, errlen, "plugin_opt_%s: %s is outside %.0f to %.0f bytes", o->name, v, o->min, o->max);
			return false;
		}
		*(uint64_t *)field = x;
		return true;
	}
	case T_DURATION: {
		int64_t x;
		if(!config_parse_duration_ms(v, &x)){
			snprintf(err, errlen, "plugin_opt_%s: \"%s\" is not a duration (250ms, 10s, 5m, 2h, 7d)", o->name, v);
			return false;
		}
		if((double)x < o->min || (double)x > o->max){
			snprintf(err, errlen, "plugin_opt_%s: %s is outside %.0f ms to %.0f ms", o->name, v, o->min, o->max);
			return false;
		}
		*(int64_t *)field = x;
		return true;
	}
	case T_ENUM: {
		for(int i = 0; o->words[i]; i++){
			if(!strcmp(v, o->words[i])){
				*(int *)field = i;
				return true;
			}
		}
		size_t k = (size_t)snprintf(err, errlen, "plugin_opt_%s: \"%s\" is not one of", o->name, v);
		for(int i = 0; o->words[i] && k < errlen; i++){
			k += (size_t)snprintf(err + k, errlen - k, "%s %s", i ? "," : "", o->words[i]);
		}
		return false;
	}
	case T_BOOL:
		if(!strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1")) *(bool *)field = true;
		else if(!strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0")) *(bool *)field = false;
		else{
			snprintf(err, errlen, "plugin_opt_%s: \"%s\" is not true or false", o->name, v);
			return false;
		}
		return true;
	}
	return false;
}

static bool kafka_prop_add(struct config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
	if(!*key){
		snprintf(err, errlen, "plugin_opt_kafka.: no property name");
		return false;
	}
	struct config_kv *n = realloc(cfg->kafka_props, (cfg->kafka_nprops + 1) * sizeof(*n));
	if(!n){
		snprintf(err, errlen, "out of memory");
		return false;
	}
	cfg->kafka_props = n;
	n[cfg->kafka_nprops].key = strdup(key);
	n[cfg->kafka_nprops].value = strdup(value);
	cfg->kafka_nprops++;
	return n[cfg->kafka_nprops - 1].key && n[cfg->kafka_nprops - 1].value;
}

bool config_parse(const struct config_kv *kv, size_t n, struct config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	for(size_t i = 0; i < NOPTS; i++){
		if(opts[i].def && !set_value(&opts[i], cfg, opts[i].def, err, errlen)) goto failed;
	}
	for(size_t k = 0; k < n; k++){
		if(!strncmp(kv[k].key, "kafka.", 6)){
			/* handed to librdkafka as is; the Kafka sink names a property librdkafka refuses */
			if(!kafka_prop_add(cfg, kv[k].key + 6, kv[k].value ? kv[k].value : "", err, errlen)) goto failed;
			continue;
		}
		const struct opt *o = NULL;
		for(size_t i = 0; i < NOPTS && !o; i++){
			if(!strcmp(kv[k].key, opts[i].name)) o = &opts[i];
		}
		if(!o){
			snprintf(err, errlen, "plugin_opt_%s: unknown option (see the option table in the iotpipe README)", kv[k].key);
			goto failed;
		}
		const char *v = kv[k].value ? kv[k].value : "";
		if(*v == '\0' && o->type != T_STRING){
			snprintf(err, errlen, "plugin_opt_%s: empty value", o->name);
			goto failed;
		}
		if(!set_value(o, cfg, v, err, errlen)) goto failed;
	}
	if(cfg->journal_dir[0] != '/'){
		snprintf(err, errlen, "plugin_opt_journal_dir: \"%s\" is not an absolute path", cfg->journal_dir);
		goto failed;
	}
	if(cfg->kafka_nprops && !cfg->kafka_brokers){
		snprintf(err, errlen, "plugin_opt_kafka.%s: Kafka properties given but no plugin_opt_kafka_brokers", cfg->kafka_props[0].key);
		goto failed;
	}
	if(cfg->file_sink_dir && cfg->file_sink_dir[0] != '/' && strcmp(cfg->file_sink_dir, "off") != 0){
		snprintf(err, errlen, "plugin_opt_file_sink_dir: \"%s\" is not an absolute path", cfg->file_sink_dir);
		goto failed;
	}
	if(cfg->alert_topic[0] && (strchr(cfg->alert_topic, '+') || strchr(cfg->alert_topic, '#'))){
		snprintf(err, errlen, "plugin_opt_alert_topic: \"%s\" may not contain wildcards", cfg->alert_topic);
		goto failed;
	}
	if(cfg->device_topic_level >= 0){
		for(size_t i = 0; i < cfg->topics.n; i++){
			const struct topic_filter *f = &cfg->topics.f[i];
			if((size_t)cfg->device_topic_level >= f->nlevels && !f->hash){
				snprintf(err, errlen, "plugin_opt_device_topic_level: %lld is beyond the levels of topic filter '%s'",
						(long long)cfg->device_topic_level, f->text);
				goto failed;
			}
		}
	}
	return true;
failed:
	config_free(cfg);
	return false;
}

static bool ensure_dir(const char *opt, const char *dir, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s", dir);
	for(char *p = path + 1; ; p++){
		if(*p == '/' || *p == '\0'){
			char c = *p;
			*p = '\0';
			if(mkdir(path, 0750) && errno != EEXIST){
				snprintf(err, errlen, "plugin_opt_%s: cannot create %s: %s", opt, path, strerror(errno));
				return false;
			}
			*p = c;
			if(c == '\0') break;
		}
	}
	if(access(dir, W_OK | X_OK)){
		snprintf(err, errlen, "plugin_opt_%s: %s is not writable: %s", opt, dir, strerror(errno));
		return false;
	}
	return true;
}

bool config_check_dirs(const struct config *cfg, char *err, size_t errlen)
{
	if(!ensure_dir("journal_dir", cfg->journal_dir, err, errlen)) return false;
	if(cfg->file_sink_dir && cfg->file_sink_dir[0] == '/' && !ensure_dir("file_sink_dir", cfg->file_sink_dir, err, errlen)) return false;
	return true;
}

void config_free(struct config *cfg)
{
	topic_set_free(&cfg->topics);
	free(cfg->journal_dir);
	free(cfg->file_sink_dir);
	free(cfg->registry_file);
	free(cfg->alert_topic);
	free(cfg->kafka_brokers);
	for(size_t i = 0; i < sizeof(cfg->kafka_topic) / sizeof(cfg->kafka_topic[0]); i++) free(cfg->kafka_topic[i]);
	for(size_t i = 0; i < cfg->kafka_nprops; i++){
		free((char *)cfg->kafka_props[i].key);
		free((char *)cfg->kafka_props[i].value);
	}
	free(cfg->kafka_props);
	free(cfg->pg_conninfo);
	memset(cfg, 0, sizeof(*cfg));
}
