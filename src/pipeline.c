#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "file_sink.h"
#include "kafka_sink.h"
#include "pg_sink.h"
#include "pgreg.h"
#include "journal.h"
#include "log.h"
#include "pipeline.h"
#include "processor.h"
#include "record.h"
#include "regwatch.h"
#include "thread.h"

#define PUBQ_SLOTS 4096
#define REGISTRY_POLL_MS 1000
#define PGREG_START_WAIT_MS 3000

struct pipeline {
	struct config cfg;
	int lock_fd;
	struct journal *ingest, *outbox;
	struct regwatch *reg;
	struct pgreg *pgreg;        /* the registry from PostgreSQL: registry_file unset, pg_conninfo set */
	struct processor *proc;
	struct file_sink *fsink;
	struct kafka_sink *ksink;
	struct pg_sink *pgsink;
	char *file_dir;
	struct pubq *pubq;
	struct metrics m;
};

static struct journal *open_journal(const struct pipeline *p, const char *name, uint64_t max_bytes,
		enum journal_full_policy full, const char *const *readers, char *err, size_t errlen)
{
	char dir[4096], why[512];
	snprintf(dir, sizeof(dir), "%s/%s", p->cfg.journal_dir, name);
	struct journal_opts o = {.dir = dir, .max_bytes = max_bytes, .full = full, .sync_ms = (int)p->cfg.journal_sync_ms};
	for(size_t i = 0; readers[i] && i < JOURNAL_MAX_READERS - 1; i++) o.readers[i] = readers[i];
	struct journal *j = journal_open(&o, why, sizeof(why));
	if(!j) snprintf(err, errlen, "plugin_opt_journal_dir: %s journal: %s", name, why);
	return j;
}

struct pipeline *pipeline_start(struct config *cfg, char *err, size_t errlen)
{
	struct pipeline *p = calloc(1, sizeof(*p));
	if(!p){
		config_free(cfg);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	p->lock_fd = -1;
	if(!config_check_dirs(&p->cfg, err, errlen)) goto failed;

	/* Two brokers on one journal would interleave appends: the lock makes the second refuse to start. */
	char path[4096];
	snprintf(path, sizeof(path), "%s/lock", p->cfg.journal_dir);
	p->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if(p->lock_fd < 0 || flock(p->lock_fd, LOCK_EX | LOCK_NB)){
		snprintf(err, errlen, "plugin_opt_journal_dir: %s is in use by another broker (%s)", p->cfg.journal_dir,
				strerror(errno));
		goto failed;
	}

	/* The outbox holds the backlog while a sink is down, so it gets most of the bound. */
	const char *in_readers[] = {"processor", NULL};
	p->ingest = open_journal(p, "ingest", p->cfg.journal_max_bytes / 4, p->cfg.journal_full, in_readers, err, errlen);
	if(!p->ingest) goto failed;
	if(p->cfg.max_payload_bytes + 1024 > journal_max_record(p->ingest)){
		snprintf(err, errlen, "plugin_opt_max_payload_bytes: %" PRIu64 " does not fit a journal segment of this "
				"journal_max_bytes (at most %zu)", p->cfg.max_payload_bytes, journal_max_record(p->ingest) - 1024);
		goto failed;
	}

	/* Each sink reads the outbox with its own cursor. The file sink is the embedded default: on when
	 * file_sink_dir is set or no other sink is, then under journal_dir/out; "off" turns it off even
	 * then (the outbox then has no reader and keeps nothing: alerts still go out over MQTT). */
	const char *out_readers[JOURNAL_MAX_READERS] = {NULL};
	size_t nr = 0;
	if(p->cfg.kafka_brokers) out_readers[nr++] = "kafka";
	if(p->cfg.pg_conninfo) out_readers[nr++] = "pg";
	const char *fs = p->cfg.file_sink_dir;
	if(fs ? strcmp(fs, "off") != 0 : nr == 0){
		p->file_dir = fs ? strdup(fs) : malloc(strlen(p->cfg.journal_dir) + 8);
		if(!p->file_dir){
			snprintf(err, errlen, "out of memory");
			goto failed;
		}
		if(!fs) sprintf(p->file_dir, "%s/out", p->cfg.journal_dir);
		out_readers[nr++] = "file";
	}
	/* Outbox full under reject: the processor waits and the ingest journal applies the policy. */
	p->outbox = open_journal(p, "outbox", p->cfg.journal_max_bytes - p->cfg.journal_max_bytes / 4,
			p->cfg.journal_full, out_readers, err, errlen);
	if(!p->outbox) goto failed;

	if(p->cfg.registry_file){
		char why[512];
		p->reg = regwatch_start(p->cfg.registry_file, REGISTRY_POLL_MS, why, sizeof(why));
		if(!p->reg){
			snprintf(err, errlen, "plugin_opt_registry_file: %s", why);
			goto failed;
		}
	}else if(p->cfg.pg_conninfo){
		char cache[4096];
		snprintf(cache, sizeof(cache), "%s/pg-registry.json", p->cfg.journal_dir);
		p->pgreg = pgreg_start(p->cfg.pg_conninfo, cache, PGREG_START_WAIT_MS, err, errlen);
		if(!p->pgreg) goto failed;
	}
	p->pubq = pubq_new(PUBQ_SLOTS);
	if(!p->pubq){
		snprintf(err, errlen, "out of memory");
		goto failed;
	}

	char state[4096];
	snprintf(state, sizeof(state), "%s/processor.state", p->cfg.journal_dir);
	struct processor_deps d = {
		.cfg = &p->cfg, .in = journal_reader(p->ingest, "processor"), .out = p->outbox, .m = &p->m,
		.pubq = p->pubq, .state_path = state,
		.regslot = p->reg ? regwatch_slot(p->reg) : p->pgreg ? pgreg_slot(p->pgreg) : NULL,
	};
	p->proc = processor_start(&d, err, errlen);
	if(!p->proc) goto failed;

	if(p->cfg.kafka_brokers){
		p->ksink = kafka_sink_start(&p->cfg, journal_reader(p->outbox, "kafka"), &p->m, err, errlen);
		if(!p->ksink) goto failed;
	}
	if(p->cfg.pg_conninfo){
		p->pgsink = pg_sink_start(&p->cfg, journal_reader(p->outbox, "pg"), &p->m, err, errlen);
		if(!p->pgsink) goto failed;
	}
	if(p->file_dir){
		char why[512];
		if(mkdir(p->file_dir, 0750) && errno != EEXIST){
			snprintf(err, errlen, "plugin_opt_file_sink_dir: cannot create %s: %s", p->file_dir, strerror(errno));
			goto failed;
		}
		p->fsink = file_sink_start(p->file_dir, p->cfg.file_sink_max_bytes, journal_reader(p->outbox, "file"),
				&p->m, why, sizeof(why));
		if(!p->fsink){
			snprintf(err, errlen, "plugin_opt_file_sink_dir: %s", why);
			goto failed;
		}
	}
	return p;
failed:
	pipeline_stop(p);
	return NULL;
}

bool pipeline_captures(const struct pipeline *p, const char *topic)
{
	return topic_set_match(&p->cfg.topics, topic);
}

enum capture_rc pipeline_capture(struct pipeline *p, const char *topic, const char *client_id,
		const char *username, const void *payload, uint32_t len, uint8_t qos, bool retain)
{
	METRIC_INC_OWN(&p->m, received);
	struct capture_hdr h;
	struct iovec iov[5];
	int n = capture_iov(&h, iov, topic, client_id, username, payload, len, (uint32_t)p->cfg.max_payload_bytes,
			qos, retain, clock_wall_ms());
	enum journal_rc rc = journal_append(p->ingest, REC_CAPTURE, iov, n, NULL);
	if(rc == JOURNAL_OK){
		METRIC_INC_OWN(&p->m, journaled);
		return CAPTURE_OK;
	}
	if(rc == JOURNAL_FULL) METRIC_INC_OWN(&p->m, rejected_full);
	else METRIC_INC_OWN(&p->m, rejected_error);
	return CAPTURE_REJECTED;
}

void pipeline_reload(struct pipeline *p)
{
	if(p->reg) regwatch_request_reload(p->reg);
	if(p->pgreg) pgreg_request_reload(p->pgreg);
}

struct pubq *pipeline_pubq(struct pipeline *p)
{
	return p->pubq;
}

const struct config *pipeline_config(const struct pipeline *p)
{
	return &p->cfg;
}

struct metrics *pipeline_metrics(struct pipeline *p)
{
	return &p->m;
}

static void add_journal(cJSON *o, const char *name, struct journal *j, const char *const *readers)
{
	if(!j) return;
	struct journal_stats st;
	journal_get_stats(j, &st);
	cJSON *jo = cJSON_AddObjectToObject(o, name);
	cJSON_AddNumberToObject(jo, "next_lsn", (double)st.next_lsn);
	cJSON_AddNumberToObject(jo, "bytes", (double)st.bytes);
	cJSON_AddNumberToObject(jo, "segments", (double)st.segments);
	cJSON_AddNumberToObject(jo, "rejected", (double)st.rejected);
	cJSON_AddNumberToObject(jo, "stalls", (double)st.sync_segment_creates);
	for(size_t i = 0; readers[i]; i++){
		struct journal_reader *r = journal_reader(j, readers[i]);
		if(!r) continue;
		cJSON *ro = cJSON_AddObjectToObject(jo, readers[i]);
		cJSON_AddNumberToObject(ro, "pending", (double)journal_pending(r));
		cJSON_AddNumberToObject(ro, "unread", (double)journal_unread(r));
		cJSON_AddNumberToObject(ro, "dropped", (double)journal_reader_dropped(r));
	}
}

size_t pipeline_stats_json(struct pipeline *p, char *buf, size_t cap)
{
	cJSON *o = cJSON_CreateObject();
	if(!o) return 0;
#define NUM(name) cJSON_AddNumberToObject(o, #name, (double)METRIC_GET(&p->m, name))
	NUM(received); NUM(journaled); NUM(rejected_full); NUM(rejected_error); NUM(processed); NUM(readings);
	NUM(quarantined); NUM(alerts); NUM(aggregates); NUM(late); NUM(raw); NUM(outbox_waits);
	NUM(mqtt_published); NUM(file_written); NUM(kafka_delivered); NUM(kafka_rejected); NUM(kafka_retries);
	NUM(pg_written); NUM(pg_rejected); NUM(pg_retries);
#undef NUM
	cJSON *q = cJSON_AddObjectToObject(o, "quarantine_reasons");
	for(int r = 1; r < IP_R__COUNT; r++){
		uint64_t v = METRIC_GET(&p->m, quarantine_reason[r]);
		if(v) cJSON_AddNumberToObject(q, reason_name((enum ip_reason)r), (double)v);
	}
	static const char *const in_readers[] = {"processor", NULL};
	static const char *const out_readers[] = {"file", "kafka", "pg", NULL};
	add_journal(o, "ingest", p->ingest, in_readers);
	add_journal(o, "outbox", p->outbox, out_readers);
	cJSON_AddNumberToObject(o, "mqtt_dropped", (double)(p->pubq ? pubq_dropped(p->pubq) : 0));
	cJSON_AddNumberToObject(o, "log_dropped", (double)log_dropped());
	size_t n = 0;
	if(cJSON_PrintPreallocated(o, buf, (int)cap, false)) n = strlen(buf);
	cJSON_Delete(o);
	return n;
}

void pipeline_stop(struct pipeline *p)
{
	if(!p) return;
	/* upstream first, so each stage drains what the one before it left */
	processor_stop(p->proc);
	file_sink_stop(p->fsink);
	kafka_sink_stop(p->ksink);
	pg_sink_stop(p->pgsink);
	if(p->reg) regwatch_stop(p->reg);
	pgreg_stop(p->pgreg);
	journal_close(p->outbox);
	journal_close(p->ingest);
	pubq_free(p->pubq);
	if(p->lock_fd >= 0) close(p->lock_fd);
	free(p->file_dir);
	config_free(&p->cfg);
	free(p);
}
