/* The Kafka sink (DESIGN.md sections 1 and 4): one thread tails the outbox from its own cursor and
 * produces every output record with librdkafka, key = deviceId, the record id and the content type in
 * headers, the record's JSON (outrec_json) as the value.
 *
 * The journal is the buffer, not librdkafka: messages never time out (message.timeout.ms=0), a full
 * producer queue only pauses the reading, and the cursor moves on delivery reports alone. Reports
 * come back per partition, so out of order across partitions: every record read gets a slot in a
 * ring, in LSN order, and the cursor moves up to the first slot not yet done. A crash therefore
 * re-sends at most what was in flight, and consumers drop those by id.
 *
 * Every rd_kafka_* call after the start runs on the sink thread, and so do the delivery report and
 * error callbacks (librdkafka serves them from rd_kafka_poll): the ring needs no lock. Only the log
 * callback comes from librdkafka's own threads, and it just queues a line. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "kafka_sink.h"
#include "log.h"
#include "reason.h"
#include "record.h"
#include "thread.h"
#include "topic.h"

#define KS_KINDS (REC__END - REC_RAW)
#define KS_RING_SLOTS (1u << 17)        /* records in flight at most: above the queue cap below */
#define KS_BATCH 1024                   /* records produced between two polls of the delivery reports */
#define KS_FLUSH_MS 5000                /* shutdown: how long delivery reports are awaited */
#define KS_BACKOFF_MIN_MS 250
#define KS_BACKOFF_MAX_MS 10000
#define KS_QUARANTINE_HEAD (64 * 1024)  /* payload kept in a sink_rejected record, at most */
#define KS_KEY_MAX 256
#define KS_REJECT_LOG_PER_S 10
#define KS_CONTENT_TYPE "application/json"

/* Throughput defaults, set before the user's kafka.<property> lines so that any of them can be
 * overridden. */
static const char *const ks_defaults[][2] = {
	{"client.id", "iotpipe"},
	/* ordered, duplicate-free retries within a partition: per-device order survives broker failovers */
	{"enable.idempotence", "true"},
	{"acks", "all"},
	/* retry forever: the outbox holds the backlog, so a message must never expire in librdkafka */
	{"message.timeout.ms", "0"},
	{"linger.ms", "5"},
	{"batch.num.messages", "10000"},
	{"batch.size", "1000000"},
	{"compression.type", "lz4"},
	/* a bounded producer queue: QUEUE_FULL pauses the reading, the rest waits in the outbox */
	{"queue.buffering.max.messages", "100000"},
	{"queue.buffering.max.kbytes", "65536"},
	/* the partition of a key is the one Java clients (Kafka Streams, Connect) compute */
	{"partitioner", "murmur2_random"},
	{"socket.keepalive.enable", "true"},
};

enum ks_slot_state {
	KS_SENDING,                 /* read; produced or about to be */
	KS_REJECTED,                /* refused for good: its sink_rejected record waits to be produced */
	KS_QUARANTINING,            /* its sink_rejected record is in flight */
	KS_DONE,                    /* acknowledged (or its sink_rejected record was) */
};

/* A record in flight. Its state (enum ks_slot_state) is kept apart, in s->state: a delivery report
 * and the cursor's walk touch one byte per record, not the whole slot. */
struct ks_slot {
	uint64_t lsn;
	uint64_t id;
	uint16_t kind;
};

/* A sink_rejected record waiting for room in the producer queue. */
struct ks_job {
	struct ks_job *next;
	uint64_t seq;
	uint64_t id;
	char *key;
	char *json;
	size_t len;
};

/* The record read last, kept until librdkafka takes it (it may answer QUEUE_FULL). */
struct ks_pending {
	bool have;
	uint64_t seq;
	uint16_t kind;
	uint64_t id;
	size_t len;                 /* JSON in s->json */
	char key[KS_KEY_MAX];
	bool has_key;
};

enum ks_err_class { KS_E_TRANSIENT, KS_E_PERMANENT, KS_E_FATAL, KS_E_IGNORE };

struct kafka_sink {
	/* set at start, read-only afterwards */
	struct journal_reader *reader;
	struct metrics *m;
	rd_kafka_conf_t *conf;      /* template: a producer is (re)made from a copy */
	char *topic[KS_KINDS];
	int device_level;
	size_t quarantine_head;
	pthread_t thread;
	_Atomic bool stop;
	/* kafka sink thread */
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt[KS_KINDS];
	struct ks_slot *ring;
	uint8_t *state;             /* enum ks_slot_state of each ring slot */
	uint64_t base, next;        /* slot sequence numbers: [base, next) are in the ring */
	uint64_t committed;         /* what journal_commit was last given */
	uint64_t outstanding;       /* messages librdkafka holds: produced, no report yet */
	struct ks_pending cur;
	struct ks_job *jobs, **jobs_tail;
	struct outrec_json *gen;
	char *json;
	size_t json_cap;
	bool fatal;                 /* the error callback saw RD_KAFKA_RESP_ERR__FATAL */
	bool rewind;                /* a report failed transiently: re-send from the cursor */
	bool discarding;            /* purging before a destroy: reports are void */
	char rewind_why[256];
	int64_t retry_at;           /* monotonic ms: no producing before this after a transient error */
	int backoff_ms;
	bool failing;               /* a transient produce error was logged and not yet cleared */
	uint64_t resent;            /* records sent again after a rewind or a new producer (duplicates) */
	int64_t rej_window;         /* rejection log lines: this second's start, lines logged, lines held back */
	unsigned rej_logged;
	uint64_t rej_quiet;
};

/* any thread: the id as consumers see it in the JSON "id": 16 lowercase hex digits */
static void kafka_sink__hex(uint64_t id, char out[17])
{
	static const char digits[] = "0123456789abcdef";
	for(int i = 15; i >= 0; i--){
		out[i] = digits[id & 15];
		id >>= 4;
	}
	out[16] = '\0';
}

/* librdkafka's internal threads: its lines join the broker log through the log queue */
static void kafka_sink__on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	enum ip_log_level l = level <= 3 ? IP_LOG_ERR : level == 4 ? IP_LOG_WARNING : level == 5 ? IP_LOG_NOTICE
		: level == 6 ? IP_LOG_INFO : IP_LOG_DEBUG;
	ip_log(l, "iotpipe: kafka: %s: %s", fac, buf);
}

/* librdkafka's own threads, first thing: niced like every pipeline thread (thread.h), so that the
 * broker's main thread wins a busy core over compression and socket work */
static rd_kafka_resp_err_t kafka_sink__on_thread_start(rd_kafka_t *rk, rd_kafka_thread_type_t type, const char *name,
		void *ic_opaque)
{
	char n[16];     /* a thread name's limit */
	snprintf(n, sizeof(n), "rdk:%s", name);
	thread_background(n);
	return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* the thread calling rd_kafka_new */
static rd_kafka_resp_err_t kafka_sink__on_new(rd_kafka_t *rk, const rd_kafka_conf_t *conf, void *ic_opaque, char *errstr,
		size_t errstr_size)
{
	return rd_kafka_interceptor_add_on_thread_start(rk, "iotpipe", kafka_sink__on_thread_start, NULL);
}

/* the thread calling rd_kafka_conf_dup: a copy does not inherit interceptors, so they are added again */
static rd_kafka_resp_err_t kafka_sink__on_conf_dup(rd_kafka_conf_t *new_conf, const rd_kafka_conf_t *old_conf,
		size_t filter_cnt, const char **filter, void *ic_opaque)
{
	rd_kafka_conf_interceptor_add_on_new(new_conf, "iotpipe", kafka_sink__on_new, NULL);
	rd_kafka_conf_interceptor_add_on_conf_dup(new_conf, "iotpipe", kafka_sink__on_conf_dup, NULL);
	return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* kafka sink thread (served by rd_kafka_poll) */
static void kafka_sink__on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct kafka_sink *s = opaque;
	if(err == RD_KAFKA_RESP_ERR__FATAL){
		/* acted on in the main loop, where the producer can be replaced */
		s->fatal = true;
		return;
	}
	switch(err){
	case RD_KAFKA_RESP_ERR__TRANSPORT:
	case RD_KAFKA_RESP_ERR__AUTHENTICATION:
	case RD_KAFKA_RESP_ERR__SSL:
	case RD_KAFKA_RESP_ERR__RESOLVE:
		return;     /* a broker connection failing: librdkafka's own log line says it already */
	default:
		ip_log(IP_LOG_WARNING, "iotpipe: kafka sink: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
	}
}

/* any thread: what a failed produce or delivery means for the record */
static enum ks_err_class kafka_sink__classify(rd_kafka_resp_err_t err)
{
	switch(err){
	/* the record itself, or what the cluster allows for it: sending it again cannot help */
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_MSG:
	case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
	case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
	case RD_KAFKA_RESP_ERR__BAD_MSG:
	case RD_KAFKA_RESP_ERR__INVALID_ARG:
	case RD_KAFKA_RESP_ERR__KEY_SERIALIZATION:
	case RD_KAFKA_RESP_ERR__VALUE_SERIALIZATION:
		return KS_E_PERMANENT;
	case RD_KAFKA_RESP_ERR__FATAL:
		return KS_E_FATAL;
	/* only ever ours, before a destroy */
	case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
	case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
	case RD_KAFKA_RESP_ERR__DESTROY:
		return KS_E_IGNORE;
	default:
		/* timeouts (a user's message.timeout.ms), unknown topics (created later), brokers away */
		return KS_E_TRANSIENT;
	}
}

/* kafka sink thread */
static struct ks_slot *kafka_sink__slot(struct kafka_sink *s, uint64_t seq)
{
	return &s->ring[seq & (KS_RING_SLOTS - 1)];
}

/* kafka sink thread */
static uint8_t *kafka_sink__state(struct kafka_sink *s, uint64_t seq)
{
	return &s->state[seq & (KS_RING_SLOTS - 1)];
}

/* kafka sink thread: the cursor goes up to the first record not yet done, never past a hole */
static void kafka_sink__advance(struct kafka_sink *s)
{
	uint64_t from = s->base;
	while(s->base < s->next && *kafka_sink__state(s, s->base) == KS_DONE) s->base++;
	if(s->base == from) return;
	uint64_t to = kafka_sink__slot(s, s->base - 1)->lsn + 1;
	if(to > s->committed){
		journal_commit(s->reader, to);
		s->committed = to;
		s->backoff_ms = 0;  /* progress: the next failure starts its back-off afresh */
	}
}

/* kafka sink thread: room for the JSON of a record whose body has len bytes (worst case: every
 * byte escaped as \u00XX) */
static bool kafka_sink__json_room(struct kafka_sink *s, size_t len)
{
	size_t need = 6 * len + 4096;
	if(need <= s->json_cap) return true;
	char *n = realloc(s->json, need);
	if(!n) return false;
	s->json = n;
	s->json_cap = need;
	return true;
}

/* kafka sink thread: the JSON of r into s->json; 0 when it cannot be encoded */
static size_t kafka_sink__to_json(struct kafka_sink *s, const struct outrec *r, size_t body_len)
{
	size_t n = outrec_json(s->gen, r, s->json, s->json_cap);
	if(n == 0 && kafka_sink__json_room(s, body_len)) n = outrec_json(s->gen, r, s->json, s->json_cap);
	return n;
}

/* kafka sink thread: the partitioning key. Raw and quarantine records may have no device id: then
 * the device id of their MQTT topic, else the publishing client's id, so a device's records still
 * share a partition. */
static bool kafka_sink__key(const struct kafka_sink *s, const struct outrec *r, char *out, size_t cap)
{
	const char *k = NULL;
	if(r->device_id && *r->device_id) k = r->device_id;
	else if(r->topic && s->device_level >= 0 && topic_level(r->topic, s->device_level, out, cap)) return true;
	else if(r->client_id && *r->client_id) k = r->client_id;
	if(!k) return false;
	size_t n = strnlen(k, cap - 1);   /* device and client ids are far shorter than KS_KEY_MAX */
	memcpy(out, k, n);
	out[n] = '\0';
	return true;
}

/* kafka sink thread: one message; the tag comes back in its delivery report */
static rd_kafka_resp_err_t kafka_sink__produce(struct kafka_sink *s, rd_kafka_topic_t *rkt, const char *key,
		const char *value, size_t len, uint64_t id, uint64_t tag)
{
	char hex[17];
	kafka_sink__hex(id, hex);
	/* RD_KAFKA_MSG_F_COPY: the JSON buffer is reused for the next record at once */
	rd_kafka_resp_err_t err = rd_kafka_producev(s->rk,
			RD_KAFKA_V_RKT(rkt),
			RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
			RD_KAFKA_V_VALUE((void *)value, len),
			RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
			RD_KAFKA_V_HEADER("id", hex, 16),
			RD_KAFKA_V_HEADER("content-type", KS_CONTENT_TYPE, (ssize_t)strlen(KS_CONTENT_TYPE)),
			RD_KAFKA_V_OPAQUE((void *)(uintptr_t)tag),
			RD_KAFKA_V_END);
	if(!err) s->outstanding++;
	return err;
}

/* kafka sink thread: a refused batch or topic can refuse thousands of records a second; the log
 * gets the first few of each second and a count of the rest (kafka_rejected has them all) */
static bool kafka_sink__may_log_rejection(struct kafka_sink *s)
{
	int64_t now = clock_mono_ms();
	if(now - s->rej_window >= 1000){
		if(s->rej_quiet){
			ip_log(IP_LOG_WARNING, "iotpipe: kafka sink: %" PRIu64 " more records refused by Kafka and sent to %s",
					s->rej_quiet, s->topic[REC_QUARANTINE - REC_RAW]);
		}
		s->rej_window = now;
		s->rej_logged = 0;
		s->rej_quiet = 0;
	}
	if(s->rej_logged < KS_REJECT_LOG_PER_S){
		s->rej_logged++;
		return true;
	}
	s->rej_quiet++;
	return false;
}

/* kafka sink thread: a record Kafka refused for good (or that cannot be encoded) becomes a
 * sink_rejected quarantine record for the quarantine topic, since the sink cannot write to the
 * outbox (its one writer is the processor). Its slot is done once that record is acknowledged. */
static void kafka_sink__reject(struct kafka_sink *s, uint64_t seq, const char *why, const char *topic,
		const char *key, const void *payload, size_t len, bool binary)
{
	struct ks_slot *sl = kafka_sink__slot(s, seq);
	char hex[17], detail[768];
	kafka_sink__hex(sl->id, hex);
	snprintf(detail, sizeof(detail), "kafka: %s (%s id %s, outbox LSN %" PRIu64 ", topic %s)", why,
			rec_kind_name(sl->kind), hex, sl->lsn, topic);
	size_t keep = len;
	if(keep > s->quarantine_head){
		keep = s->quarantine_head;
		/* cut on a character boundary, so a JSON value stays text and not hex */
		while(!binary && keep > 0 && (((const uint8_t *)payload)[keep] & 0xC0) == 0x80) keep--;
	}
	int64_t now = clock_wall_ms();
	/* the id derives from the refused record's id: a replay refused again gets the same one */
	struct outrec q = {
		.kind = REC_QUARANTINE, .reason = IP_R_SINK_REJECTED, .id = record_id_lsn(REC_QUARANTINE, sl->id, UINT32_MAX),
		.ts_ms = now, .arrival_ms = now, .device_id = key, .detail = detail,
		.payload = payload, .payload_len = (uint32_t)keep,
	};
	if(keep < len){
		q.flags |= OUT_TRUNCATED;
		q.orig_payload_len = (uint32_t)len;
	}
	METRIC_ADD(s->m, kafka_rejected, 1);
	if(kafka_sink__may_log_rejection(s)){
		ip_log(IP_LOG_WARNING, "iotpipe: kafka sink: %s record %s (outbox LSN %" PRIu64 ") refused by Kafka: %s; "
				"sent to %s as sink_rejected", rec_kind_name(sl->kind), hex, sl->lsn, why, s->topic[REC_QUARANTINE - REC_RAW]);
	}
	struct ks_job *j = calloc(1, sizeof(*j));
	size_t cap = 6 * keep + sizeof(detail) * 6 + 4096;
	if(j) j->json = malloc(cap);
	if(j && key) j->key = strdup(key);
	if(!j || !j->json || (key && !j->key) || !(j->len = outrec_to_json(&q, j->json, cap))){
		ip_log(IP_LOG_ERR, "iotpipe: kafka sink: cannot build the sink_rejected record of %s; it is lost", hex);
		if(j){
			free(j->json);
			free(j->key);
			free(j);
		}
		*kafka_sink__state(s, seq) = KS_DONE;
		return;
	}
	j->seq = seq;
	j->id = q.id;
	*s->jobs_tail = j;
	s->jobs_tail = &j->next;
	*kafka_sink__state(s, seq) = KS_REJECTED;
}

/* kafka sink thread (inside rd_kafka_poll): the only place records become done */
static void kafka_sink__on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	struct kafka_sink *s = opaque;
	uint64_t tag = (uintptr_t)msg->_private;
	uint64_t seq = tag >> 1;
	bool is_quarantine = tag & 1;
	s->outstanding--;
	/* reports of messages sent before a rewind or from a purged producer say nothing any more */
	if(s->discarding || seq < s->base || seq >= s->next) return;
	if(!msg->err){
		if(!is_quarantine) METRIC_ADD(s->m, kafka_delivered, 1);
		*kafka_sink__state(s, seq) = KS_DONE;
		return;
	}
	struct ks_slot *sl = kafka_sink__slot(s, seq);
	char hex[17];
	kafka_sink__hex(sl->id, hex);
	switch(kafka_sink__classify(msg->err)){
	case KS_E_IGNORE:
		return;
	case KS_E_FATAL:
		s->fatal = true;
		return;
	case KS_E_PERMANENT:
		if(is_quarantine){
			/* nowhere left to put it: say so loudly rather than stall every record behind it */
			ip_log(IP_LOG_ERR, "iotpipe: kafka sink: the sink_rejected record of %s record %s (outbox LSN %" PRIu64
					") was refused too: %s; it is lost", rec_kind_name(sl->kind), hex, sl->lsn, rd_kafka_err2str(msg->err));
			*kafka_sink__state(s, seq) = KS_DONE;
			return;
		}
		/* the key is not NUL-terminated in a report */
		char key[KS_KEY_MAX];
		size_t kl = msg->key_len < sizeof(key) - 1 ? msg->key_len : sizeof(key) - 1;
		if(msg->key) memcpy(key, msg->key, kl);
		key[kl] = '\0';
		kafka_sink__reject(s, seq, rd_kafka_err2str(msg->err), rd_kafka_topic_name(msg->rkt), msg->key ? key : NULL,
				msg->payload, msg->len, false);
		return;
	case KS_E_TRANSIENT:
		/* Later records of the same partition may be acknowledged already: sending this one alone
		 * would put it after them. Everything from the cursor goes again, in order. */
		METRIC_ADD(s->m, kafka_retries, 1);
		if(!s->rewind){
			snprintf(s->rewind_why, sizeof(s->rewind_why), "%s record %s (outbox LSN %" PRIu64 "): %s",
					rec_kind_name(sl->kind), hex, sl->lsn, rd_kafka_err2str(msg->err));
		}
		s->rewind = true;
		return;
	}
}

/* main thread at start, or kafka sink thread after a fatal error: a producer and its topics */
static bool kafka_sink__connect(struct kafka_sink *s, char *err, size_t errlen)
{
	rd_kafka_conf_t *c = rd_kafka_conf_dup(s->conf);
	if(!c){
		snprintf(err, errlen, "out of memory");
		return false;
	}
	s->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, errlen);
	if(!s->rk){
		rd_kafka_conf_destroy(c);
		return false;
	}
	for(int k = 0; k < KS_KINDS; k++){
		s->rkt[k] = rd_kafka_topic_new(s->rk, s->topic[k], NULL);
		if(!s->rkt[k]){
			snprintf(err, errlen, "topic %s: %s", s->topic[k], rd_kafka_err2str(rd_kafka_last_error()));
			return false;
		}
	}
	return true;
}

/* any thread owning s->rk: the producer goes, whatever it still holds (reports are void) */
static void kafka_sink__disconnect(struct kafka_sink *s)
{
	if(!s->rk) return;
	s->discarding = true;
	rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
	rd_kafka_poll(s->rk, 0);
	for(int k = 0; k < KS_KINDS; k++){
		if(s->rkt[k]) rd_kafka_topic_destroy(s->rkt[k]);
		s->rkt[k] = NULL;
	}
	rd_kafka_destroy(s->rk);
	s->rk = NULL;
	s->outstanding = 0;
	s->discarding = false;
}

/* kafka sink thread */
static void kafka_sink__drop_jobs(struct kafka_sink *s)
{
	while(s->jobs){
		struct ks_job *j = s->jobs;
		s->jobs = j->next;
		free(j->key);
		free(j->json);
		free(j);
	}
	s->jobs_tail = &s->jobs;
}

/* kafka sink thread: forget everything after the cursor and read from it again. Records acknowledged
 * after the first one that is not are sent twice: consumers drop them by id. */
static void kafka_sink__restart_from_cursor(struct kafka_sink *s, const char *why)
{
	kafka_sink__advance(s);
	uint64_t dup = 0;
	for(uint64_t q = s->base; q < s->next; q++){
		if(*kafka_sink__state(s, q) == KS_DONE) dup++;
	}
	s->resent += dup;
	s->base = s->next;
	s->cur.have = false;
	kafka_sink__drop_jobs(s);
	journal_rewind(s->reader);
	/* the reason last: a long one from librdkafka is what the log queue's line limit cuts */
	ip_log(IP_LOG_WARNING, "iotpipe: kafka sink: sending again from outbox LSN %" PRIu64 ", %" PRIu64 " records "
			"acknowledged after it go twice (%" PRIu64 " so far; consumers drop them by id): %s", s->committed, dup,
			s->resent, why);
}

/* kafka sink thread: the time to wait before the next try grows while the error lasts */
static void kafka_sink__back_off(struct kafka_sink *s)
{
	s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : KS_BACKOFF_MIN_MS;
	if(s->backoff_ms > KS_BACKOFF_MAX_MS) s->backoff_ms = KS_BACKOFF_MAX_MS;
	s->retry_at = clock_mono_ms() + s->backoff_ms;
}

/* kafka sink thread: librdkafka gave up on the producer (idempotence state lost, fenced, ...). Only
 * a new producer can go on; it starts from the committed cursor. */
static void kafka_sink__recover_fatal(struct kafka_sink *s)
{
	char why[512] = "unknown", msg[700], err[512];
	if(s->rk){
		rd_kafka_resp_err_t e = rd_kafka_fatal_error(s->rk, why, sizeof(why));
		snprintf(msg, sizeof(msg), "producer failed for good (%s: %s); made a new one", rd_kafka_err2name(e), why);
		/* acknowledgements already in are still true: taking them spares duplicates */
		rd_kafka_poll(s->rk, 0);
		kafka_sink__advance(s);
	}else{
		snprintf(msg, sizeof(msg), "making a new producer");
	}
	kafka_sink__disconnect(s);
	s->fatal = false;
	s->rewind = false;
	kafka_sink__restart_from_cursor(s, msg);
	if(!kafka_sink__connect(s, err, sizeof(err))){
		ip_log(IP_LOG_ERR, "iotpipe: kafka sink: cannot make a new producer: %s; trying again", err);
		kafka_sink__disconnect(s);
		s->fatal = true;
		kafka_sink__back_off(s);
	}
}

/* kafka sink thread: read the next record into s->cur; false when there is none */
static bool kafka_sink__read(struct kafka_sink *s)
{
	struct journal_rec rec;
	if(!journal_next(s->reader, &rec)) return false;
	uint64_t seq = s->next++;
	struct ks_slot *sl = kafka_sink__slot(s, seq);
	*sl = (struct ks_slot){.lsn = rec.lsn, .kind = (uint16_t)rec.kind};
	*kafka_sink__state(s, seq) = KS_SENDING;
	struct outrec r;
	bool ok = rec.kind >= REC_RAW && rec.kind < REC__END && outrec_decode((uint16_t)rec.kind, rec.body, rec.len, &r);
	if(!ok){
		/* not to be skipped silently: the loss ledger must account for it (the id, from the outbox
		 * LSN, is stable across replays of the outbox) */
		sl->id = record_id_lsn((uint16_t)rec.kind, rec.lsn, UINT32_MAX);
		kafka_sink__reject(s, seq, "undecodable outbox record", s->topic[REC_QUARANTINE - REC_RAW], NULL, rec.body,
				rec.len, true);
		return true;
	}
	sl->id = r.id;
	s->cur.has_key = kafka_sink__key(s, &r, s->cur.key, sizeof(s->cur.key));
	s->cur.len = kafka_sink__to_json(s, &r, rec.len);
	if(s->cur.len == 0){
		kafka_sink__reject(s, seq, "cannot be encoded as JSON", s->topic[rec.kind - REC_RAW],
				s->cur.has_key ? s->cur.key : NULL, rec.body, rec.len, true);
		return true;
	}
	s->cur.have = true;
	s->cur.seq = seq;
	s->cur.kind = (uint16_t)rec.kind;
	s->cur.id = r.id;
	return true;
}

enum ks_step { KS_SENT, KS_WAIT };

/* kafka sink thread: what to do after a produce call failed */
static enum ks_step kafka_sink__produce_failed(struct kafka_sink *s, rd_kafka_resp_err_t err, uint64_t seq,
		const char *topic, const char *key, const char *value, size_t len)
{
	if(err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return KS_WAIT;     /* reports will make room */
	switch(kafka_sink__classify(err)){
	case KS_E_PERMANENT:
		kafka_sink__reject(s, seq, rd_kafka_err2str(err), topic, key, value, len, false);
		return KS_SENT;
	case KS_E_FATAL:
		s->fatal = true;
		return KS_WAIT;
	default:
		/* nothing after this record was produced, so trying it again later keeps the order */
		METRIC_ADD(s->m, kafka_retries, 1);
		if(!s->failing){
			ip_log(IP_LOG_WARNING, "iotpipe: kafka sink: cannot produce to %s: %s; retrying", topic, rd_kafka_err2str(err));
		}
		s->failing = true;
		kafka_sink__back_off(s);
		return KS_WAIT;
	}
}

/* kafka sink thread: the sink_rejected records, in order; false when one had to wait */
static bool kafka_sink__send_jobs(struct kafka_sink *s)
{
	rd_kafka_topic_t *rkt = s->rkt[REC_QUARANTINE - REC_RAW];
	while(s->jobs){
		struct ks_job *j = s->jobs;
		struct ks_slot *sl = kafka_sink__slot(s, j->seq);
		rd_kafka_resp_err_t err = kafka_sink__produce(s, rkt, j->key, j->json, j->len, j->id, j->seq << 1 | 1);
		if(err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return false;
		if(err == RD_KAFKA_RESP_ERR__FATAL){
			s->fatal = true;
			return false;
		}
		if(err && kafka_sink__classify(err) != KS_E_PERMANENT){
			METRIC_ADD(s->m, kafka_retries, 1);
			kafka_sink__back_off(s);
			return false;
		}
		if(err){
			char hex[17];
			kafka_sink__hex(sl->id, hex);
			ip_log(IP_LOG_ERR, "iotpipe: kafka sink: the sink_rejected record of %s record %s was refused too: %s; "
					"it is lost", rec_kind_name(sl->kind), hex, rd_kafka_err2str(err));
		}
		*kafka_sink__state(s, j->seq) = err ? KS_DONE : KS_QUARANTINING;
		s->jobs = j->next;
		if(!s->jobs) s->jobs_tail = &s->jobs;
		free(j->key);
		free(j->json);
		free(j);
	}
	return true;
}

/* kafka sink thread: produce up to KS_BATCH records; KS_WAIT when librdkafka or the ring is full or
 * a retry is due later */
static enum ks_step kafka_sink__send_records(struct kafka_sink *s, int *sent)
{
	*sent = 0;
	while(*sent < KS_BATCH){
		if(!s->cur.have){
			if(s->next - s->base >= KS_RING_SLOTS) return KS_WAIT;
			if(!kafka_sink__read(s)) return KS_SENT;
			if(!s->cur.have) continue;   /* refused before producing: its job is queued */
		}
		const char *key = s->cur.has_key ? s->cur.key : NULL;
		rd_kafka_topic_t *rkt = s->rkt[s->cur.kind - REC_RAW];
		rd_kafka_resp_err_t err = kafka_sink__produce(s, rkt, key, s->json, s->cur.len, s->cur.id, s->cur.seq << 1);
		if(err){
			enum ks_step st = kafka_sink__produce_failed(s, err, s->cur.seq, s->topic[s->cur.kind - REC_RAW], key,
					s->json, s->cur.len);
			if(st == KS_WAIT) return KS_WAIT;
		}else if(s->failing){
			ip_log(IP_LOG_NOTICE, "iotpipe: kafka sink: producing again");
			s->failing = false;
			s->backoff_ms = 0;
		}
		s->cur.have = false;
		(*sent)++;
	}
	return KS_SENT;
}

/* kafka sink thread: bounded, so a stop with Kafka away does not hang the broker; what is not
 * acknowledged by then stays in the outbox for the next start */
static void kafka_sink__shutdown(struct kafka_sink *s)
{
	int64_t deadline = clock_mono_ms() + KS_FLUSH_MS;
	while(s->rk && !s->fatal && (s->outstanding > 0 || (s->jobs && !s->rewind)) && clock_mono_ms() < deadline){
		if(!s->rewind) kafka_sink__send_jobs(s);
		rd_kafka_poll(s->rk, 50);
		kafka_sink__advance(s);
	}
	kafka_sink__advance(s);
	uint64_t left = journal_pending(s->reader);
	if(left) ip_log(IP_LOG_NOTICE, "iotpipe: kafka sink: stopped with %" PRIu64 " records not acknowledged; they "
			"stay in the outbox for the next start", left);
	kafka_sink__disconnect(s);
}

/* kafka sink thread */
static void *kafka_sink__main(void *arg)
{
	struct kafka_sink *s = arg;
	thread_background("iotpipe-kafka");
	while(!atomic_load(&s->stop)){
		if(s->fatal){
			if(clock_mono_ms() >= s->retry_at) kafka_sink__recover_fatal(s);
			else journal_wait(s->reader, 50);
			continue;
		}
		if(s->rewind){
			/* wait until librdkafka holds nothing, so no report of the old order arrives after it */
			if(s->outstanding > 0){
				rd_kafka_poll(s->rk, 50);
				kafka_sink__advance(s);
				continue;
			}
			s->rewind = false;
			kafka_sink__restart_from_cursor(s, s->rewind_why);
			kafka_sink__back_off(s);
			continue;
		}
		if(clock_mono_ms() < s->retry_at){
			rd_kafka_poll(s->rk, 20);
			kafka_sink__advance(s);
			continue;
		}
		int sent = 0;
		enum ks_step st = kafka_sink__send_jobs(s) ? kafka_sink__send_records(s, &sent) : KS_WAIT;
		/* serves delivery reports (and errors) whatever happened */
		rd_kafka_poll(s->rk, st == KS_WAIT ? 10 : 0);
		kafka_sink__advance(s);
		if(st == KS_WAIT || sent > 0) continue;
		if(s->outstanding > 0) rd_kafka_poll(s->rk, 5);   /* a report or 5 ms, then the outbox again */
		else journal_wait(s->reader, 50);
		kafka_sink__advance(s);
	}
	kafka_sink__shutdown(s);
	return NULL;
}

/* main thread at start: the producer configuration; err names the option at fault */
static rd_kafka_conf_t *kafka_sink__conf(const struct config *cfg, struct kafka_sink *s, char *err, size_t errlen)
{
	char why[512];
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	if(!c){
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	bool no_idempotence = false, in_flight_given = false;
	for(size_t i = 0; i < cfg->kafka_nprops; i++){
		const struct config_kv *p = &cfg->kafka_props[i];
		if(!strcmp(p->key, "enable.idempotence")) no_idempotence = !strcmp(p->value, "false");
		if(!strcmp(p->key, "max.in.flight") || !strcmp(p->key, "max.in.flight.requests.per.connection")) in_flight_given = true;
		if(!strcmp(p->key, "transactional.id")){
			snprintf(err, errlen, "plugin_opt_kafka.transactional.id: not supported: the Kafka sink is an idempotent "
					"producer, the record ids make replays harmless");
			goto failed;
		}
	}
	for(size_t i = 0; i < sizeof(ks_defaults) / sizeof(ks_defaults[0]); i++){
		if(rd_kafka_conf_set(c, ks_defaults[i][0], ks_defaults[i][1], why, sizeof(why)) != RD_KAFKA_CONF_OK){
			/* e.g. a librdkafka built without lz4: its own default does then */
			ip_log(IP_LOG_NOTICE, "iotpipe: kafka sink: default %s=%s not taken: %s", ks_defaults[i][0], ks_defaults[i][1], why);
		}
	}
	/* without idempotence, retries reorder a partition unless one request at a time is in flight */
	if(no_idempotence && !in_flight_given) rd_kafka_conf_set(c, "max.in.flight", "1", why, sizeof(why));
	if(rd_kafka_conf_set(c, "bootstrap.servers", cfg->kafka_brokers, why, sizeof(why)) != RD_KAFKA_CONF_OK){
		snprintf(err, errlen, "plugin_opt_kafka_brokers: %s", why);
		goto failed;
	}
	for(size_t i = 0; i < cfg->kafka_nprops; i++){
		const struct config_kv *p = &cfg->kafka_props[i];
		if(rd_kafka_conf_set(c, p->key, p->value, why, sizeof(why)) != RD_KAFKA_CONF_OK){
			snprintf(err, errlen, "plugin_opt_kafka.%s: %s", p->key, why);
			goto failed;
		}
	}
	/* without this librdkafka prints to stderr, which a daemonised broker does not have */
	rd_kafka_conf_set_log_cb(c, kafka_sink__on_log);
	rd_kafka_conf_set_error_cb(c, kafka_sink__on_error);
	rd_kafka_conf_set_dr_msg_cb(c, kafka_sink__on_delivery);
	rd_kafka_conf_set_opaque(c, s);
	rd_kafka_conf_interceptor_add_on_new(c, "iotpipe", kafka_sink__on_new, NULL);
	rd_kafka_conf_interceptor_add_on_conf_dup(c, "iotpipe", kafka_sink__on_conf_dup, NULL);

	/* a sink_rejected record must fit where the refused one did not: its payload keeps a head */
	char v[64];
	size_t vlen = sizeof(v);
	long max_msg = 1000000;
	if(rd_kafka_conf_get(c, "message.max.bytes", v, &vlen) == RD_KAFKA_CONF_OK) max_msg = atol(v);
	s->quarantine_head = KS_QUARANTINE_HEAD;
	if(max_msg > 0 && (size_t)max_msg / 8 < s->quarantine_head) s->quarantine_head = (size_t)max_msg / 8;
	return c;
failed:
	rd_kafka_conf_destroy(c);
	return NULL;
}

/* main thread at start: Kafka's own rule, checked here so that a typo stops the broker instead of
 * stalling every record of that kind behind an unknown topic */
static bool kafka_sink__topic_ok(const char *t)
{
	size_t n = strlen(t);
	if(n == 0 || n > 249 || !strcmp(t, ".") || !strcmp(t, "..")) return false;
	return strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* main thread at stop, or at a failed start */
static void kafka_sink__free(struct kafka_sink *s)
{
	kafka_sink__disconnect(s);
	kafka_sink__drop_jobs(s);
	if(s->conf) rd_kafka_conf_destroy(s->conf);
	for(int k = 0; k < KS_KINDS; k++) free(s->topic[k]);
	free(s->ring);
	free(s->state);
	free(s->json);
	outrec_json_free(s->gen);
	free(s);
}

/* main thread */
struct kafka_sink *kafka_sink_start(const struct config *cfg, struct journal_reader *reader, struct metrics *m,
		char *err, size_t errlen)
{
	if(!reader){
		snprintf(err, errlen, "plugin_opt_kafka_brokers: the outbox has no kafka reader");
		return NULL;
	}
	struct kafka_sink *s = calloc(1, sizeof(*s));
	if(!s){
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->reader = reader;
	s->m = m;
	s->jobs_tail = &s->jobs;
	s->device_level = (int)cfg->device_topic_level;
	/* a reader used before (a restarted sink) may have read past its cursor: start from the cursor */
	journal_rewind(reader);
	s->committed = journal_reader_committed(reader);
	s->json_cap = 64 * 1024;
	s->ring = calloc(KS_RING_SLOTS, sizeof(*s->ring));
	s->state = calloc(KS_RING_SLOTS, 1);
	s->json = malloc(s->json_cap);
	s->gen = outrec_json_new(true);   /* the JSON is most of this thread's work per record */
	if(!s->ring || !s->state || !s->json || !s->gen){
		snprintf(err, errlen, "out of memory");
		goto failed;
	}
	for(int k = 0; k < KS_KINDS; k++){
		const char *kind = rec_kind_name((uint16_t)(REC_RAW + k));
		s->topic[k] = strdup(cfg->kafka_topic[k] ? cfg->kafka_topic[k] : kind);
		if(!s->topic[k]){
			snprintf(err, errlen, "out of memory");
			goto failed;
		}
		if(!kafka_sink__topic_ok(s->topic[k])){
			snprintf(err, errlen, "plugin_opt_kafka_topic_%s: \"%s\" is not a Kafka topic name (letters, digits, "
					"'.', '_' and '-', at most 249)", kind, s->topic[k]);
			goto failed;
		}
	}
	s->conf = kafka_sink__conf(cfg, s, err, errlen);
	if(!s->conf) goto failed;
	char why[512];
	if(!kafka_sink__connect(s, why, sizeof(why))){
		snprintf(err, errlen, "plugin_opt_kafka_brokers: cannot make the Kafka producer: %s", why);
		goto failed;
	}
	if(thread_start(&s->thread, kafka_sink__main, s)){
		snprintf(err, errlen, "cannot start the Kafka sink thread");
		goto failed;
	}
	ip_log(IP_LOG_INFO, "iotpipe: kafka sink: producing to %s from outbox LSN %" PRIu64, cfg->kafka_brokers, s->committed);
	return s;
failed:
	kafka_sink__free(s);
	return NULL;
}

/* main thread */
void kafka_sink_stop(struct kafka_sink *s)
{
	if(!s) return;
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	kafka_sink__free(s);
}
