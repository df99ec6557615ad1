#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "payload.h"
#include "processor.h"
#include "record.h"
#include "registry.h"
#include "regwatch.h"
#include "series.h"
#include "thread.h"
#include "topic.h"
#include "units.h"

#define MAX_READINGS 64
#define CHECKPOINT_MS 5000
#define SWEEP_MS 1000
#define BATCH 1024
#define STOP_DRAIN_MS 2000

struct processor {
	struct processor_deps d;
	struct series_table *series;
	const struct ip_registry *reg;  /* the snapshot in use for the capture at hand */
	uint8_t *buf;
	size_t bufcap;
	char *json;
	char *state_path;           /* checkpoint file; NULL: no checkpoints */
	struct ip_reading readings[MAX_READINGS];
	pthread_t thread;
	pthread_t ck_thread;        /* syncs the last checkpoint (checkpoint_publish) */
	bool ck_running;            /* processor thread: ck_thread is to be joined */
	_Atomic bool ck_done;
	uint64_t ck_lsn;            /* the ingest LSN the checkpoint being synced reflects */
	bool started;
	_Atomic bool stop;
	bool aborted;               /* stop arrived while waiting for outbox space */
};

/* processor thread: one record into the outbox. Waits while the outbox is full (reject policy):
 * the ingest journal is the buffer then, and it applies journal_full at the broker. */
static bool emit(struct processor *p, const struct outrec *r)
{
	size_t n = outrec_encode(r, p->buf, p->bufcap);
	if(n == 0){
		ip_log(IP_LOG_ERR, "iotpipe: processor: a %s record does not fit %zu bytes", rec_kind_name(r->kind), p->bufcap);
		return true;
	}
	struct iovec iov = {p->buf, n};
	bool waited = false;
	for(;;){
		enum journal_rc rc = journal_append(p->d.out, r->kind, &iov, 1, NULL);
		if(rc == JOURNAL_OK) return true;
		if(rc == JOURNAL_TOO_BIG){
			ip_log(IP_LOG_ERR, "iotpipe: processor: a %zu-byte %s record exceeds an outbox segment", n, rec_kind_name(r->kind));
			return true;
		}
		if(!waited) METRIC_ADD(p->d.m, outbox_waits, 1);
		waited = true;
		if(atomic_load(&p->stop) && p->started){
			p->aborted = true;
			return false;
		}
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

static void quarantine(struct processor *p, uint64_t lsn, uint32_t index, const struct capture *c,
		enum ip_reason reason, const char *detail, const char *device_id, const char *sensor_id)
{
	struct outrec r = {
		.kind = REC_QUARANTINE, .reason = (uint16_t)reason, .id = record_id_lsn(REC_QUARANTINE, lsn, index),
		.src_lsn = lsn, .ts_ms = c->h.arrival_ms, .arrival_ms = c->h.arrival_ms, .qos = c->h.qos,
		.topic = c->topic, .client_id = c->client_id, .username = c->username, .detail = detail,
		.device_id = device_id && *device_id ? device_id : NULL,
		.sensor_id = sensor_id && *sensor_id ? sensor_id : NULL,
		.payload = c->payload, .payload_len = c->h.stored_len,
	};
	if(c->h.flags & CAPTURE_TRUNCATED){
		r.flags |= OUT_TRUNCATED;
		r.orig_payload_len = c->h.payload_len;
	}
	if(!emit(p, &r)) return;
	METRIC_ADD(p->d.m, quarantined, 1);
	METRIC_ADD(p->d.m, quarantine_reason[reason < IP_R__COUNT ? reason : 0], 1);
}

/* enrichment values for a device, from the snapshot in use */
static void enrich(const struct ip_device_info *dev, struct outrec *r)
{
	if(!dev) return;
	r->location = dev->location;
	r->zone = dev->zone;
	r->device_type = dev->device_type;
}

static void alert_topic(const char *pattern, const char *device_id, char *out, size_t cap)
{
	const char *ph = strstr(pattern, "{deviceId}");
	if(!ph){
		snprintf(out, cap, "%s", pattern);
		return;
	}
	snprintf(out, cap, "%.*s%s%s", (int)(ph - pattern), pattern, device_id, ph + strlen("{deviceId}"));
}

static void emit_alert(struct processor *p, uint64_t lsn, const char *dev, const char *sensor, const char *unit,
		const struct ip_device_info *dinfo, const struct ip_alert *a)
{
	struct outrec r = {
		.kind = REC_ALERT, .src_lsn = lsn, .ts_ms = a->ts_ms, .device_id = dev, .sensor_id = sensor,
		.unit = unit && *unit ? unit : NULL, .value = a->value, .limit = a->limit, .score = a->score,
		.alert_kind = a->kind == ALERT_ZSCORE ? OUT_ALERT_ZSCORE : OUT_ALERT_THRESHOLD,
		.alert_state = a->state == ALERT_RESOLVED ? OUT_ALERT_RESOLVED : OUT_ALERT_FIRING,
	};
	r.id = record_id_alert(dev, sensor, a->ts_ms, r.alert_kind, r.alert_state);
	enrich(dinfo, &r);
	if(!emit(p, &r)) return;
	METRIC_ADD(p->d.m, alerts, 1);
	const char *pattern = p->d.cfg->alert_topic;
	if(!p->d.pubq || !pattern || !*pattern) return;
	char topic[PUBQ_TOPIC_MAX];
	alert_topic(pattern, dev, topic, sizeof(topic));
	size_t n = outrec_to_json(&r, p->json, PUBQ_PAYLOAD_MAX);
	if(n) pubq_push(p->d.pubq, topic, p->json, n);
}

static void emit_aggregate(struct processor *p, uint64_t lsn, const struct ip_aggregate *a)
{
	struct outrec r = {
		.kind = REC_AGGREGATE, .src_lsn = lsn, .id = record_id_aggregate(a->device_id, a->sensor_id, a->win_start_ms),
		.device_id = a->device_id, .sensor_id = a->sensor_id, .ts_ms = a->win_start_ms, .win_end_ms = a->win_end_ms,
		.first_ts_ms = a->first_ts_ms, .last_ts_ms = a->last_ts_ms, .count = a->count, .sum = a->sum,
		.min = a->min, .max = a->max, .value = a->count ? a->sum / a->count : NAN,
	};
	const struct ip_device_info *dinfo = p->reg ? registry_find(p->reg, a->device_id) : NULL;
	enrich(dinfo, &r);
	const struct ip_sensor_info *sinfo = dinfo ? registry_sensor(dinfo, a->sensor_id) : NULL;
	if(sinfo && sinfo->unit[0]) r.unit = sinfo->unit;
	if(!emit(p, &r)) return;
	METRIC_ADD(p->d.m, aggregates, 1);
}

struct sweep_ctx {
	struct processor *p;
	uint64_t lsn;
};

static void sweep_emit(void *ctx, const struct ip_aggregate *a)
{
	struct sweep_ctx *s = ctx;
	emit_aggregate(s->p, s->lsn, a);
}

/* processor thread: the checks and outputs of one parsed reading */
static void handle_reading(struct processor *p, uint64_t lsn, uint32_t index, const struct capture *c,
		struct ip_reading *rd, const char *topic_dev, const char *bound, int64_t now_ms)
{
	const struct config *cfg = p->d.cfg;
	char detail[160];
	const char *dev = rd->device_id[0] ? rd->device_id : topic_dev;

	if(rd->reason != IP_OK){
		quarantine(p, lsn, index, c, rd->reason, rd->detail, dev, rd->sensor_id);
		return;
	}
	if(!dev || !*dev){
		quarantine(p, lsn, index, c, IP_R_MISSING_FIELD, "no deviceId in the payload or the topic", NULL, rd->sensor_id);
		return;
	}
	if(rd->device_id[0] && topic_dev && strcmp(rd->device_id, topic_dev)){
		snprintf(detail, sizeof(detail), "payload deviceId \"%s\" but the topic names \"%s\"", rd->device_id, topic_dev);
		quarantine(p, lsn, index, c, IP_R_IDENTITY_MISMATCH, detail, dev, rd->sensor_id);
		return;
	}
	if(bound && strcmp(dev, bound)){
		snprintf(detail, sizeof(detail), "device \"%s\" published by %s \"%s\"", dev,
				cfg->identity == IDENTITY_USERNAME ? "username" : "client id", bound);
		quarantine(p, lsn, index, c, IP_R_IDENTITY_SPOOF, detail, dev, rd->sensor_id);
		return;
	}
	if(!rd->ts_missing && rd->ts_ms > now_ms + cfg->ts_max_future_ms){
		snprintf(detail, sizeof(detail), "ts %" PRId64 " is %" PRId64 " ms ahead of arrival", rd->ts_ms, rd->ts_ms - now_ms);
		quarantine(p, lsn, index, c, IP_R_TS_FUTURE, detail, dev, rd->sensor_id);
		return;
	}
	if(!rd->ts_missing && rd->ts_ms < now_ms - cfg->ts_max_age_ms){
		snprintf(detail, sizeof(detail), "ts %" PRId64 " is older than ts_max_age", rd->ts_ms);
		quarantine(p, lsn, index, c, IP_R_TS_TOO_OLD, detail, dev, rd->sensor_id);
		return;
	}

	const struct ip_device_info *dinfo = p->reg ? registry_find(p->reg, dev) : NULL;
	const struct ip_sensor_info *sinfo = NULL;
	const char *sensor = rd->sensor_id;
	if(p->reg && !dinfo && cfg->unknown_devices == UNKNOWN_QUARANTINE){
		snprintf(detail, sizeof(detail), "device \"%s\" is not in the registry", dev);
		quarantine(p, lsn, index, c, IP_R_UNKNOWN_DEVICE, detail, dev, rd->sensor_id);
		return;
	}
	if(dinfo){
		sinfo = registry_sensor(dinfo, sensor);
		if(!sinfo && !(dinfo->any_sensor && *sensor)){
			snprintf(detail, sizeof(detail), "device \"%s\" has no sensor \"%s\"", dev, *sensor ? sensor : "(default)");
			quarantine(p, lsn, index, c, IP_R_UNKNOWN_SENSOR, detail, dev, sensor);
			return;
		}
		if(sinfo) sensor = sinfo->sensor_id;
	}
	if(!*sensor) sensor = "value";   /* no registry to name the default sensor */

	double value = rd->value;
	const char *unit = rd->unit[0] ? rd->unit : NULL;
	if(sinfo && sinfo->unit[0]){
		if(unit && !units_convert(rd->value, unit, sinfo->unit, &value)){
			snprintf(detail, sizeof(detail), "unit \"%s\" cannot be converted to the registry's \"%s\"", unit, sinfo->unit);
			quarantine(p, lsn, index, c, IP_R_UNIT_MISMATCH, detail, dev, sensor);
			return;
		}
		unit = sinfo->unit;
	}
	if(sinfo && (value < sinfo->min || value > sinfo->max)){
		snprintf(detail, sizeof(detail), "value %g outside [%g, %g]", value, sinfo->min, sinfo->max);
		quarantine(p, lsn, index, c, IP_R_OUT_OF_RANGE, detail, dev, sensor);
		return;
	}

	double threshold = sinfo ? sinfo->threshold : NAN;
	double zlimit = sinfo ? sinfo->anomaly_z : 0;
	struct series_out so;
	enum ip_reason why = series_observe(p->series, dev, sensor, rd->ts_ms, value, threshold, zlimit, now_ms, &so);
	if(why != IP_OK){
		snprintf(detail, sizeof(detail), "reading for ts %" PRId64 " seen before", rd->ts_ms);
		quarantine(p, lsn, index, c, why, detail, dev, sensor);
		return;
	}

	struct outrec r = {
		.kind = REC_ENRICHED, .id = record_id_reading(dev, sensor, rd->ts_ms), .src_lsn = lsn,
		.ts_ms = rd->ts_ms, .arrival_ms = c->h.arrival_ms, .device_id = dev, .sensor_id = sensor,
		.unit = unit, .value = value, .limit = threshold, .score = so.zscore,
	};
	enrich(dinfo, &r);
	if(rd->ts_missing) r.flags |= OUT_TS_MISSING;
	if(so.is_anomaly) r.flags |= OUT_ANOMALY;
	if(so.late) r.flags |= OUT_LATE;
	if(!dinfo) r.flags |= OUT_UNENRICHED;
	if(!isnan(threshold)) r.flags |= OUT_HAS_THRESHOLD;
	if(!emit(p, &r)) return;
	METRIC_ADD(p->d.m, readings, 1);
	if(so.late) METRIC_ADD(p->d.m, late, 1);
	for(size_t i = 0; i < so.n_alerts; i++) emit_alert(p, lsn, dev, sensor, unit, dinfo, &so.alerts[i]);
	for(size_t i = 0; i < so.n_aggs; i++) emit_aggregate(p, lsn, &so.aggs[i]);
}

void processor_handle(struct processor *p, const struct journal_rec *rec)
{
	const struct config *cfg = p->d.cfg;
	struct capture c;
	/* a relaxed load unless a new snapshot is waiting: cheap enough per capture */
	if(p->d.regslot) p->reg = regslot_take(p->d.regslot);
	if(rec->kind != REC_CAPTURE || !capture_decode(rec->body, rec->len, &c)){
		ip_log(IP_LOG_WARNING, "iotpipe: processor: ingest record %" PRIu64 " is not a capture; skipped", rec->lsn);
		return;
	}
	if(cfg->raw_output){
		struct outrec r = {
			.kind = REC_RAW, .id = record_id_lsn(REC_RAW, rec->lsn, 0), .src_lsn = rec->lsn,
			.ts_ms = c.h.arrival_ms, .arrival_ms = c.h.arrival_ms, .qos = c.h.qos, .topic = c.topic,
			.client_id = c.client_id, .username = c.username, .payload = c.payload, .payload_len = c.h.stored_len,
		};
		if(emit(p, &r)) METRIC_ADD(p->d.m, raw, 1);
	}
	if(c.h.flags & CAPTURE_TRUNCATED){
		char detail[96];
		snprintf(detail, sizeof(detail), "%" PRIu32 " bytes, over max_payload_bytes", c.h.payload_len);
		quarantine(p, rec->lsn, 0, &c, IP_R_OVERSIZED_PAYLOAD, detail, NULL, NULL);
		return;
	}

	struct payload_result res;
	payload_parse((const char *)c.payload, c.h.stored_len, c.h.arrival_ms, p->readings, MAX_READINGS, &res);
	if(res.reason != IP_OK){
		quarantine(p, rec->lsn, 0, &c, res.reason, res.detail, NULL, NULL);
		return;
	}

	char topic_dev[IP_ID_MAX];
	const char *tdev = NULL;
	if(cfg->device_topic_level >= 0 && topic_level(c.topic, (int)cfg->device_topic_level, topic_dev, sizeof(topic_dev))){
		tdev = topic_dev;
	}
	const char *bound = cfg->identity == IDENTITY_USERNAME ? c.username
		: cfg->identity == IDENTITY_CLIENT_ID ? c.client_id : NULL;
	for(size_t i = 0; i < res.count && !p->aborted; i++){
		/* "now" is the arrival time, not the clock: a replay after a crash decides exactly as the first pass did */
		handle_reading(p, rec->lsn, (uint32_t)i, &c, &p->readings[i], tdev, bound, c.h.arrival_ms);
	}
}

/* checkpoint thread (or the processor's at stop): the written state made durable and renamed into
 * place, then the ingest cursor follows. A crash between the two is resolved at the next start from
 * the file's LSN. */
static void checkpoint_publish(struct processor *p)
{
	char err[512];
	if(series_publish(p->state_path, err, sizeof(err))) journal_commit(p->d.in, p->ck_lsn);
	else ip_log(IP_LOG_ERR, "iotpipe: processor: checkpoint failed: %s", err);
	atomic_store(&p->ck_done, true);
}

static void *checkpoint_thread(void *arg)
{
	thread_background("iotpipe-ckpt");
	checkpoint_publish(arg);
	return NULL;
}

/* processor thread: the state and the ingest LSN it reflects go into one file. The processor writes
 * it (page cache, quick) and a short-lived thread makes it durable: an fsync can take hundreds of ms
 * when PostgreSQL and Kafka write on the same disk, and readings must not wait for it. False when
 * the previous checkpoint is still syncing (try again later); with wait, it waits for that one and
 * syncs this one itself. */
static bool checkpoint(struct processor *p, uint64_t next_lsn, bool wait)
{
	if(p->ck_running){
		if(!wait && !atomic_load(&p->ck_done)) return false;
		pthread_join(p->ck_thread, NULL);
		p->ck_running = false;
	}
	char err[512];
	series_set_tag(p->series, next_lsn);
	if(!p->state_path){
		journal_commit(p->d.in, next_lsn);
		return true;
	}
	if(!series_write(p->series, p->state_path, err, sizeof(err))){
		ip_log(IP_LOG_ERR, "iotpipe: processor: checkpoint failed: %s", err);
		return true;    /* at the next one's time, not at once */
	}
	p->ck_lsn = next_lsn;
	atomic_store(&p->ck_done, false);
	if(!wait && thread_start(&p->ck_thread, checkpoint_thread, p) == 0){
		p->ck_running = true;
		return true;
	}
	checkpoint_publish(p);
	return true;
}

/* processor thread: the ingest journal holds everything since the last checkpoint, so one is due
 * early when it fills past half its bound */
static bool ingest_filling(struct processor *p)
{
	struct journal_stats st;
	journal_get_stats(journal_reader_journal(p->d.in), &st);
	return st.bytes > st.max_bytes / 2;
}

static void *processor_main(void *arg)
{
	struct processor *p = arg;
	thread_background("iotpipe-proc");
	int64_t last_ck = clock_wall_ms(), last_sweep = last_ck, drain_until = 0;
	uint64_t done = journal_reader_committed(p->d.in), ck_lsn = done;
	for(;;){
		struct journal_rec rec;
		int n = 0;
		int64_t now = clock_wall_ms();
		/* at stop, what is already journaled is processed for a bounded time; the rest waits for
		 * the next start */
		if(atomic_load(&p->stop)){
			if(!drain_until) drain_until = now + STOP_DRAIN_MS;
			if(now >= drain_until) break;
		}
		while(n < BATCH && !p->aborted && journal_next(p->d.in, &rec)){
			processor_handle(p, &rec);
			if(p->aborted) break;
			METRIC_ADD(p->d.m, processed, 1);
			done = rec.lsn + 1;
			n++;
		}
		if(p->aborted) break;
		if(now - last_sweep >= SWEEP_MS){
			struct sweep_ctx sc = {p, done};
			series_sweep(p->series, now, sweep_emit, &sc);
			last_sweep = now;
		}
		/* a checkpoint writes every series: with many of them, take it less often (1M series: every 100 s) */
		int64_t every = CHECKPOINT_MS + (int64_t)(series_count(p->series) / 10);
		if(done > ck_lsn && (now - last_ck >= every || (n == BATCH && ingest_filling(p))) && checkpoint(p, done, false)){
			ck_lsn = done;
			last_ck = now;
		}
		if(n == 0){
			if(drain_until) break;
			journal_wait(p->d.in, 50);
		}
	}
	if(!p->aborted && done > ck_lsn) checkpoint(p, done, true);
	if(p->ck_running) pthread_join(p->ck_thread, NULL);
	p->ck_running = false;
	return NULL;
}

struct processor *processor_new(const struct processor_deps *d, char *err, size_t errlen)
{
	struct processor *p = calloc(1, sizeof(*p));
	if(!p){
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->d = *d;
	p->d.state_path = NULL;
	if(d->state_path && !(p->state_path = strdup(d->state_path))){
		snprintf(err, errlen, "out of memory");
		free(p);
		return NULL;
	}
	const struct config *cfg = d->cfg;
	struct series_params sp;
	series_params_default(&sp);
	sp.window_ms = cfg->window_ms;
	sp.lateness_ms = cfg->window_lateness_ms;
	sp.z_default = cfg->anomaly_z;
	sp.z_min_samples = (uint32_t)cfg->anomaly_min_samples;
	p->series = series_table_new(&sp);
	/* an outbox record holds a quarantined payload plus its strings */
	p->bufcap = cfg->max_payload_bytes + 4096;
	p->buf = malloc(p->bufcap);
	p->json = malloc(PUBQ_PAYLOAD_MAX + 1);
	if(!p->series || !p->buf || !p->json){
		snprintf(err, errlen, "out of memory");
		processor_free(p);
		return NULL;
	}
	if(p->state_path){
		char why[512];
		FILE *f = fopen(p->state_path, "r");
		if(f){
			fclose(f);
			if(!series_load(p->series, p->state_path, why, sizeof(why))){
				ip_log(IP_LOG_WARNING, "iotpipe: processor: ignoring checkpoint %s: %s; baselines and windows start afresh",
						p->state_path, why);
			}else if(d->in && series_tag(p->series) > journal_reader_committed(d->in)){
				/* saved, then stopped before the cursor moved: the outputs up to the tag are in the
				 * outbox already, and replaying them would fold them into the state twice */
				journal_commit(d->in, series_tag(p->series));
				journal_rewind(d->in);
			}
		}
	}
	return p;
}

void processor_free(struct processor *p)
{
	if(!p) return;
	if(p->series) series_table_free(p->series);
	free(p->state_path);
	free(p->buf);
	free(p->json);
	free(p);
}

struct processor *processor_start(const struct processor_deps *d, char *err, size_t errlen)
{
	struct processor *p = processor_new(d, err, errlen);
	if(!p) return NULL;
	p->started = true;
	if(thread_start(&p->thread, processor_main, p)){
		snprintf(err, errlen, "cannot start the processor thread");
		processor_free(p);
		return NULL;
	}
	return p;
}

void processor_stop(struct processor *p)
{
	if(!p) return;
	atomic_store(&p->stop, true);
	pthread_join(p->thread, NULL);
	processor_free(p);
}

size_t processor_series_bytes(const struct processor *p, size_t *count)
{
	*count = series_count(p->series);
	return series_bytes(p->series);
}
