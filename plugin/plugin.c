/* The Mosquitto-facing glue: the three exported entry points and the broker callbacks. Everything
 * here runs on the broker's main thread, the only thread that may call mosquitto_*. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mosquitto.h>

#include "config.h"
#include "log.h"
#include "pipeline.h"
#include "thread.h"

#define EXPORT __attribute__((visibility("default")))
#define TICK_LOG_LINES 256
#define TICK_PUBLISHES 2000
#define STATS_TOPIC "$SYS/broker/iotpipe/stats"

struct plugin {
	mosquitto_plugin_id_t *id;
	struct pipeline *pipeline;
	int64_t next_stats_ms;
	char stats[8192];
};

static struct plugin plugin;

static int mosq_level(enum ip_log_level l)
{
	switch(l){
	case IP_LOG_ERR: return MOSQ_LOG_ERR;
	case IP_LOG_WARNING: return MOSQ_LOG_WARNING;
	case IP_LOG_NOTICE: return MOSQ_LOG_NOTICE;
	case IP_LOG_INFO: return MOSQ_LOG_INFO;
	default: return MOSQ_LOG_DEBUG;
	}
}

/* main thread */
static void drain_log(int max_lines)
{
	enum ip_log_level level;
	char line[512];
	for(int i = 0; i < max_lines && log_pop(&level, line, sizeof(line)); i++){
		mosquitto_log_printf(mosq_level(level), "%s", line);
	}
}

/* main thread: the hot path. A topic match and a memcpy into the ingest journal, nothing else. */
static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct plugin *pl = userdata;
	/* everything else passes untouched, before any other work */
	if(!pl->pipeline || !ed->topic || !pipeline_captures(pl->pipeline, ed->topic)) return MOSQ_ERR_SUCCESS;
	const char *client_id = ed->client ? mosquitto_client_id(ed->client) : NULL;
	const char *username = ed->client ? mosquitto_client_username(ed->client) : NULL;
	enum capture_rc rc = pipeline_capture(pl->pipeline, ed->topic, client_id, username, ed->payload,
			ed->payloadlen, ed->qos, ed->retain);
	/* MQTT 5 clients see reason 0x87 (not authorized) for a publish the full journal refused. */
	return rc == CAPTURE_REJECTED ? MOSQ_ERR_ACL_DENIED : MOSQ_ERR_SUCCESS;
}

/* main thread: at least every ~100 ms */
static int on_tick(int event, void *event_data, void *userdata)
{
	struct plugin *pl = userdata;
	drain_log(TICK_LOG_LINES);
	if(!pl->pipeline) return MOSQ_ERR_SUCCESS;
	struct pubq *q = pipeline_pubq(pl->pipeline);
	struct pubq_msg m;
	struct metrics *mx = pipeline_metrics(pl->pipeline);
	for(int i = 0; i < TICK_PUBLISHES && pubq_pop(q, &m); i++){
		if(mosquitto_broker_publish_copy(NULL, m.topic, (int)m.len, m.payload, 1, false, NULL) == MOSQ_ERR_SUCCESS){
			METRIC_ADD(mx, mqtt_published, 1);
		}
	}
	const struct config *cfg = pipeline_config(pl->pipeline);
	if(cfg->metrics_interval_ms > 0){
		int64_t now = clock_mono_ms();
		if(now >= pl->next_stats_ms){
			pl->next_stats_ms = now + cfg->metrics_interval_ms;
			size_t n = pipeline_stats_json(pl->pipeline, pl->stats, sizeof(pl->stats));
			if(n) mosquitto_broker_publish_copy(NULL, STATS_TOPIC, (int)n, pl->stats, 0, true, NULL);
		}
	}
	return MOSQ_ERR_SUCCESS;
}

/* main thread: SIGHUP */
static int on_reload(int event, void *event_data, void *userdata)
{
	struct plugin *pl = userdata;
	if(pl->pipeline){
		pipeline_reload(pl->pipeline);
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "iotpipe: reload: registry re-read requested; "
				"other option changes take effect at the next broker start");
	}
	return MOSQ_ERR_SUCCESS;
}

EXPORT int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	char err[1024];
	memset(&plugin, 0, sizeof(plugin));
	plugin.id = identifier;
	*userdata = &plugin;

	struct config_kv *kv = calloc((size_t)option_count + 1, sizeof(*kv));
	if(!kv) return MOSQ_ERR_NOMEM;
	for(int i = 0; i < option_count; i++) kv[i] = (struct config_kv){options[i].key, options[i].value};
	struct config cfg;
	bool ok = config_parse(kv, (size_t)option_count, &cfg, err, sizeof(err));
	free(kv);
	if(!ok){
		mosquitto_log_printf(MOSQ_LOG_ERR, "iotpipe: refusing to start: %s", err);
		return MOSQ_ERR_INVAL;
	}
	char topics[512] = "";
	for(size_t i = 0; i < cfg.topics.n; i++){
		size_t k = strlen(topics);
		snprintf(topics + k, sizeof(topics) - k, "%s%s", i ? " " : "", cfg.topics.f[i].text);
	}
	char journal_dir[512];
	snprintf(journal_dir, sizeof(journal_dir), "%s", cfg.journal_dir);

	log_use_queue(true);
	plugin.pipeline = pipeline_start(&cfg, err, sizeof(err));
	drain_log(1 << 20);
	if(!plugin.pipeline){
		log_use_queue(false);
		mosquitto_log_printf(MOSQ_LOG_ERR, "iotpipe: refusing to start: %s", err);
		return MOSQ_ERR_INVAL;
	}
	int rc = mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, &plugin);
	if(!rc) rc = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, &plugin);
	if(!rc) rc = mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, &plugin);
	if(rc){
		mosquitto_log_printf(MOSQ_LOG_ERR, "iotpipe: refusing to start: cannot register callbacks (%d)", rc);
		pipeline_stop(plugin.pipeline);
		plugin.pipeline = NULL;
		return rc;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "iotpipe %s: capturing '%s' into %s", IOTPIPE_VERSION, topics, journal_dir);
	return MOSQ_ERR_SUCCESS;
}

EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct plugin *pl = userdata;
	if(!pl || !pl->pipeline) return MOSQ_ERR_SUCCESS;
	mosquitto_callback_unregister(pl->id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(pl->id, MOSQ_EVT_TICK, on_tick, NULL);
	mosquitto_callback_unregister(pl->id, MOSQ_EVT_RELOAD, on_reload, NULL);
	pipeline_stop(pl->pipeline);
	pl->pipeline = NULL;
	drain_log(1 << 20);
	log_use_queue(false);
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "iotpipe: stopped; cursors persisted");
	return MOSQ_ERR_SUCCESS;
}
