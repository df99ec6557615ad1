#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "config.h"
#include "journal.h"
#include "kafka_sink.h"
#include "log.h"
#include "metrics.h"
#include "record.h"
#include "wait.h"

/* The Kafka sink against librdkafka's mock cluster (three brokers in this process), fed from a real
 * outbox journal. Errors are injected into the mock; what arrived is read back with a consumer.
 * Deadlines only keep a broken run from hanging: nothing here asserts on how long anything took. */

#define DEADLINE_MS 60000
#define PRODUCE_API 0           /* Kafka protocol ApiKey of ProduceRequest */
#define NPART 3
#define MAXREC 4096

static const char *const topics[] = {"devices.telemetry", "devices.enriched", "devices.alerts",
	"devices.quarantine", "devices.aggregated"};
#define T_ENRICHED 1
#define T_QUARANTINE 3

/* what the test wrote, by outbox LSN */
struct sent {
	uint64_t lsn;
	uint64_t id;
	uint16_t kind;
	char key[64];
	int64_t ts;
};

/* what a consumer read back */
struct got {
	char topic[64];
	int32_t partition;
	int64_t offset;
	char *key;
	char id_hdr[32];
	char ctype[64];
	cJSON *json;
};

struct fx {
	char dir[64];
	struct journal *j;
	struct journal_reader *r;
	rd_kafka_t *mrk;                /* owns the mock cluster */
	rd_kafka_mock_cluster_t *mc;
	char bootstraps[256];
	struct metrics m;
	struct config cfg;
	bool cfg_set;
	struct kafka_sink *sink;
	struct sent sent[MAXREC];
	size_t nsent;
	struct got *got;
	size_t ngot, capgot;
	unsigned char covered[MAXREC];
	size_t ncovered;
	char log_hit[8][128];           /* log lines the test waits for */
	bool log_seen[8];
	size_t nlog;
};

static struct fx F;

/* the sink's log lines (they go through the plugin's queue, as in the broker): printed, and matched */
static void drain_log(void)
{
	enum ip_log_level lvl;
	char line[600];
	while(log_pop(&lvl, line, sizeof(line))){
		if(lvl <= IP_LOG_NOTICE) printf("  log: %s\n", line);
		for(size_t i = 0; i < F.nlog; i++){
			if(strstr(line, F.log_hit[i])) F.log_seen[i] = true;
		}
	}
}

static size_t watch_log(const char *text)
{
	assert_true(F.nlog < 8);
	snprintf(F.log_hit[F.nlog], sizeof(F.log_hit[0]), "%s", text);
	F.log_seen[F.nlog] = false;
	return F.nlog++;
}

typedef bool (*cond_fn)(void *);

static void wait_for(cond_fn fn, void *arg, const char *what)
{
	int64_t end = clock_mono_ms() + DEADLINE_MS;
	for(;;){
		drain_log();
		if(fn(arg)) return;
		if(clock_mono_ms() > end) fail_msg("timed out waiting for %s", what);
		nap_ms(10);
	}
}

static bool cursor_at(void *arg)
{
	return journal_reader_committed(F.r) >= *(uint64_t *)arg;
}

static bool delivered_at_least(void *arg)
{
	return METRIC_GET(&F.m, kafka_delivered) >= *(uint64_t *)arg;
}

static bool retried(void *arg)
{
	return METRIC_GET(&F.m, kafka_retries) > 0;
}

static bool log_seen(void *arg)
{
	return F.log_seen[*(size_t *)arg];
}

static int setup(void **state)
{
	memset(&F, 0, sizeof(F));
	log_use_queue(true);
	snprintf(F.dir, sizeof(F.dir), "/tmp/iotpipe-test-kafka-XXXXXX");
	assert_non_null(mkdtemp(F.dir));
	char err[512];
	struct journal_opts o = {.dir = F.dir, .max_bytes = 64u << 20, .segment_bytes = 4u << 20, .readers = {"kafka", NULL}};
	F.j = journal_open(&o, err, sizeof(err));
	if(!F.j) fail_msg("journal: %s", err);
	F.r = journal_reader(F.j, "kafka");

	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "log_level", "3", err, sizeof(err));
	F.mrk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
	assert_non_null(F.mrk);
	F.mc = rd_kafka_mock_cluster_new(F.mrk, 3);
	assert_non_null(F.mc);
	snprintf(F.bootstraps, sizeof(F.bootstraps), "%s", rd_kafka_mock_cluster_bootstraps(F.mc));
	for(int t = 0; t < 5; t++) assert_int_equal(rd_kafka_mock_topic_create(F.mc, topics[t], NPART, 1), 0);
	return 0;
}

static void stop_sink(void)
{
	kafka_sink_stop(F.sink);
	F.sink = NULL;
	drain_log();
}

static int teardown(void **state)
{
	stop_sink();
	if(F.cfg_set) config_free(&F.cfg);
	journal_close(F.j);
	for(size_t i = 0; i < F.ngot; i++){
		free(F.got[i].key);
		cJSON_Delete(F.got[i].json);
	}
	free(F.got);
	rd_kafka_mock_cluster_destroy(F.mc);
	rd_kafka_destroy(F.mrk);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.dir);
	assert_int_equal(system(cmd), 0);
	drain_log();
	return 0;
}

/* plugin_opt_* pairs (without the prefix) on top of kafka_brokers = the mock cluster */
static bool parse_cfg(const char *const *extra, char *err, size_t errlen)
{
	struct config_kv kv[16] = {{"kafka_brokers", F.bootstraps}};
	size_t n = 1;
	for(size_t i = 0; extra && extra[i]; i += 2) kv[n++] = (struct config_kv){extra[i], extra[i + 1]};
	if(F.cfg_set) config_free(&F.cfg);
	F.cfg_set = config_parse(kv, n, &F.cfg, err, errlen);
	return F.cfg_set;
}

static void start_sink(const char *const *extra)
{
	char err[512] = "";
	if(!parse_cfg(extra, err, sizeof(err))) fail_msg("config: %s", err);
	memset(&F.m, 0, sizeof(F.m));
	F.sink = kafka_sink_start(&F.cfg, F.r, &F.m, err, sizeof(err));
	if(!F.sink) fail_msg("kafka_sink_start: %s", err);
}

static uint64_t append(const struct outrec *r, const char *key, int64_t ts)
{
	static uint8_t buf[1 << 20];
	size_t n = outrec_encode(r, buf, sizeof(buf));
	assert_true(n > 0);
	struct iovec iov = {buf, n};
	uint64_t lsn;
	assert_int_equal(journal_append(F.j, r->kind, &iov, 1, &lsn), JOURNAL_OK);
	assert_true(F.nsent < MAXREC);
	struct sent *s = &F.sent[F.nsent++];
	*s = (struct sent){.lsn = lsn, .id = r->id, .kind = r->kind, .ts = ts};
	snprintf(s->key, sizeof(s->key), "%s", key);
	return lsn;
}

static uint64_t put_reading(const char *dev, int64_t ts, double v)
{
	struct outrec r = {.kind = REC_ENRICHED, .id = record_id_reading(dev, "temp", ts), .ts_ms = ts, .arrival_ms = ts,
		.device_id = dev, .sensor_id = "temp", .unit = "Cel", .value = v, .location = "Berlin", .zone = "z1"};
	return append(&r, dev, ts);
}

static uint64_t put_alert(const char *dev, int64_t ts, double v)
{
	struct outrec r = {.kind = REC_ALERT, .id = record_id_alert(dev, "temp", ts, OUT_ALERT_THRESHOLD, OUT_ALERT_FIRING),
		.alert_kind = OUT_ALERT_THRESHOLD, .alert_state = OUT_ALERT_FIRING, .ts_ms = ts, .device_id = dev,
		.sensor_id = "temp", .value = v, .limit = 25};
	return append(&r, dev, ts);
}

static uint64_t put_aggregate(const char *dev, int64_t win)
{
	struct outrec r = {.kind = REC_AGGREGATE, .id = record_id_aggregate(dev, "temp", win), .ts_ms = win,
		.win_end_ms = win + 300000, .count = 3, .sum = 60, .min = 19, .max = 21, .device_id = dev, .sensor_id = "temp"};
	return append(&r, dev, win);
}

/* raw and quarantine records carry no device id: the key comes from the topic, else the client */
static uint64_t put_capture_like(uint16_t kind, const char *topic, const char *client, const char *payload,
		size_t len, const char *expect_key)
{
	static uint64_t n;
	struct outrec r = {.kind = kind, .id = record_id_lsn(kind, 1000000 + ++n, 0), .topic = topic, .client_id = client,
		.username = "", .arrival_ms = 1, .ts_ms = 1, .qos = 1, .payload = (const uint8_t *)payload,
		.payload_len = (uint32_t)len, .reason = kind == REC_QUARANTINE ? 1 : 0, .detail = "test"};
	return append(&r, expect_key, 0);
}

static uint64_t end_lsn(void)
{
	struct journal_stats st;
	journal_get_stats(F.j, &st);
	return st.next_lsn;
}

static void wait_cursor_end(void)
{
	uint64_t end = end_lsn();
	wait_for(cursor_at, &end, "the kafka cursor at the end of the outbox");
}

/* ---- reading back ---- */

static rd_kafka_t *consumer_new(const int *tix, size_t ntopics, const int *parts, size_t nparts)
{
	char err[512];
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "bootstrap.servers", F.bootstraps, err, sizeof(err));
	rd_kafka_conf_set(c, "group.id", "test", err, sizeof(err));
	rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof(err));
	rd_kafka_conf_set(c, "enable.partition.eof", "false", err, sizeof(err));
	rd_kafka_conf_set(c, "log_level", "3", err, sizeof(err));
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
	assert_non_null(rk);
	rd_kafka_poll_set_consumer(rk);
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
	for(size_t t = 0; t < ntopics; t++){
		for(size_t p = 0; p < nparts; p++){
			rd_kafka_topic_partition_list_add(l, topics[tix[t]], parts[p])->offset = RD_KAFKA_OFFSET_BEGINNING;
		}
	}
	assert_int_equal(rd_kafka_assign(rk, l), 0);
	rd_kafka_topic_partition_list_destroy(l);
	return rk;
}

static void header(const rd_kafka_message_t *m, const char *name, char *out, size_t cap)
{
	rd_kafka_headers_t *h = NULL;
	const void *v;
	size_t len;
	out[0] = '\0';
	if(rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, &len)) return;
	snprintf(out, cap, "%.*s", (int)len, (const char *)v);
}

static const struct sent *sent_by_id(uint64_t id);
static uint64_t rejected_id(const cJSON *q);
static const char *jstr(const cJSON *o, const char *k);

/* a record the test wrote is covered once it arrived, or a sink_rejected record names it */
static void cover(const struct got *g)
{
	const char *id = jstr(g->json, "id");
	if(!id) return;
	const struct sent *s = sent_by_id(strtoull(id, NULL, 16));
	const char *reason = jstr(g->json, "reason");
	if(!s && reason && !strcmp(reason, "sink_rejected")) s = sent_by_id(rejected_id(g->json));
	if(s && !F.covered[s - F.sent]++) F.ncovered++;
}

/* consumes (from the given partitions of the given topics) until want written records are covered:
 * counting messages would stop early on duplicates */
static void consume(const int *tix, size_t ntopics, const int *parts, size_t nparts, size_t want)
{
	rd_kafka_t *rk = consumer_new(tix, ntopics, parts, nparts);
	int64_t end = clock_mono_ms() + DEADLINE_MS;
	while(F.ncovered < want){
		drain_log();
		if(clock_mono_ms() > end) fail_msg("timed out consuming: %zu of %zu records (%zu messages)", F.ncovered, want, F.ngot);
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if(!m) continue;
		if(m->err){
			rd_kafka_message_destroy(m);
			continue;
		}
		if(F.ngot == F.capgot){
			F.capgot = F.capgot ? 2 * F.capgot : 1024;
			F.got = realloc(F.got, F.capgot * sizeof(*F.got));
			assert_non_null(F.got);
		}
		struct got *g = &F.got[F.ngot++];
		memset(g, 0, sizeof(*g));
		snprintf(g->topic, sizeof(g->topic), "%s", rd_kafka_topic_name(m->rkt));
		g->partition = m->partition;
		g->offset = m->offset;
		if(m->key) g->key = strndup(m->key, m->key_len);
		header(m, "id", g->id_hdr, sizeof(g->id_hdr));
		header(m, "content-type", g->ctype, sizeof(g->ctype));
		g->json = cJSON_ParseWithLength(m->payload, m->len);
		assert_non_null(g->json);
		rd_kafka_message_destroy(m);
		cover(g);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
}

static void consume_all_topics(size_t want)
{
	static const int all[] = {0, 1, 2, 3, 4}, parts[] = {0, 1, 2};
	consume(all, 5, parts, NPART, want);
}

static uint64_t parse_hex(const char *s)
{
	return strtoull(s, NULL, 16);
}

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const struct sent *sent_by_id(uint64_t id)
{
	for(size_t i = 0; i < F.nsent; i++){
		if(F.sent[i].id == id) return &F.sent[i];
	}
	return NULL;
}

/* the original id named in a sink_rejected record's detail ("kafka: <error> (<kind> id <16 hex>, ...)") */
static uint64_t rejected_id(const cJSON *q)
{
	const char *d = jstr(q, "detail");
	assert_non_null(d);
	const char *p = strrchr(d, '(');
	assert_non_null(p);
	p = strstr(p, " id ");
	assert_non_null(p);
	return parse_hex(p + 4);
}

/* Every message: its headers and key; every written record arrived (duplicates counted, returned),
 * and per key, in the order written (by first arrival when exact, else by last). */
static size_t check_got(bool first_order)
{
	size_t dups = 0;
	unsigned char *seen = calloc(F.nsent, 1);
	int64_t *pos = calloc(F.nsent, sizeof(int64_t));   /* order of arrival within its partition */
	for(size_t i = 0; i < F.ngot; i++){
		struct got *g = &F.got[i];
		const char *id = jstr(g->json, "id");
		assert_non_null(id);
		assert_string_equal(g->id_hdr, id);
		assert_int_equal(strlen(id), 16);
		assert_string_equal(g->ctype, "application/json");
		uint64_t v = parse_hex(id);
		const struct sent *s = sent_by_id(v);
		if(!s){
			/* a sink_rejected record: it names one the test wrote */
			assert_string_equal(jstr(g->json, "reason"), "sink_rejected");
			assert_non_null(sent_by_id(rejected_id(g->json)));
			continue;
		}
		assert_string_equal(g->topic, topics[s->kind - REC_RAW]);
		assert_non_null(g->key);
		assert_string_equal(g->key, s->key);
		size_t k = (size_t)(s - F.sent);
		if(seen[k]++) dups++;
		if(first_order && seen[k] > 1) continue;
		pos[k] = g->offset;
	}
	for(size_t k = 0; k < F.nsent; k++){
		if(!seen[k]) fail_msg("record %zu (LSN %" PRIu64 ", key %s) never arrived", k, F.sent[k].lsn, F.sent[k].key);
	}
	/* same key = same partition, so offsets give the order Kafka keeps */
	for(size_t a = 0; a < F.nsent; a++){
		for(size_t b = a + 1; b < F.nsent; b++){
			if(F.sent[a].kind != F.sent[b].kind || strcmp(F.sent[a].key, F.sent[b].key)) continue;
			if(pos[a] >= pos[b]) fail_msg("key %s: LSN %" PRIu64 " is after LSN %" PRIu64 " in Kafka", F.sent[a].key,
					F.sent[a].lsn, F.sent[b].lsn);
			break;  /* the next one of this key; the rest follow by induction */
		}
	}
	free(seen);
	free(pos);
	return dups;
}

static void devname(int i, char *out, size_t cap)
{
	snprintf(out, cap, "dev-%03d", i);
}

/* librdkafka's murmur2 partitioner (the Java client's): what the sink's default partitioner picks */
static int32_t murmur2_partition(const char *key, int32_t cnt)
{
	const uint32_t m = 0x5bd1e995;
	size_t len = strlen(key);
	uint32_t h = 0x9747b28c ^ (uint32_t)len;
	const unsigned char *d = (const unsigned char *)key;
	while(len >= 4){
		uint32_t k = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
		k *= m;
		k ^= k >> 24;
		k *= m;
		h *= m;
		h ^= k;
		d += 4;
		len -= 4;
	}
	if(len >= 3) h ^= (uint32_t)d[2] << 16;
	if(len >= 2) h ^= (uint32_t)d[1] << 8;
	if(len >= 1){
		h ^= d[0];
		h *= m;
	}
	h ^= h >> 13;
	h *= m;
	h ^= h >> 15;
	return (int32_t)((h & 0x7fffffff) % (uint32_t)cnt);
}

/* ---- tests ---- */

static void test_every_kind_delivered_with_key_and_headers(void **state)
{
	char dev[32];
	int64_t t0 = 1700000000000;
	for(int i = 0; i < 2000; i++){
		devname(i % 20, dev, sizeof(dev));
		put_reading(dev, t0 + i, 20 + i % 7);
		if(i % 100 == 0) put_alert(dev, t0 + i, 30);
		if(i % 250 == 0) put_aggregate(dev, t0 + i);
	}
	/* keys of records without a device id: the topic's device level, else the client id */
	put_capture_like(REC_RAW, "devices/dev-009/telemetry", "client-a", "{\"v\":1}", 7, "dev-009");
	put_capture_like(REC_QUARANTINE, "devices/dev-004/telemetry", "client-b", "not json", 8, "dev-004");
	put_capture_like(REC_QUARANTINE, "flat", "client-c", "\x01\x02\xff", 3, "client-c");
	put_capture_like(REC_RAW, "flat", "client-d", "{}", 2, "client-d");
	start_sink(NULL);
	wait_cursor_end();
	consume_all_topics(F.nsent);
	assert_int_equal(check_got(true), 0);
	assert_int_equal(F.ngot, F.nsent);
	assert_int_equal(METRIC_GET(&F.m, kafka_delivered), F.nsent);
	assert_int_equal(METRIC_GET(&F.m, kafka_rejected), 0);
	/* the value is outrec_to_json's */
	for(size_t i = 0; i < F.ngot; i++){
		const char *d = jstr(F.got[i].json, "deviceId");
		if(!strcmp(F.got[i].topic, "devices.enriched")) assert_string_equal(d, F.got[i].key);
	}
}

/* One partition's leader is down: the records of the others are acknowledged, out of order with
 * the stuck ones, and the cursor stops exactly at the first record not acknowledged. */
static void test_cursor_stops_at_oldest_unacknowledged(void **state)
{
	const char *t = "devices.enriched";
	for(int p = 0; p < NPART; p++) assert_int_equal(rd_kafka_mock_partition_set_leader(F.mc, t, p, p + 1), 0);
	assert_int_equal(rd_kafka_mock_broker_set_down(F.mc, 3), 0);
	/* the first record goes to a healthy partition, so the cursor has somewhere to move */
	char dev[32];
	int first = 0;
	for(;; first++){
		devname(first, dev, sizeof(dev));
		if(murmur2_partition(dev, NPART) != 2) break;
	}
	uint64_t first_stuck = 0, healthy = 0;
	bool have_stuck = false;
	for(int i = 0; i < 600; i++){
		devname((first + i) % 30, dev, sizeof(dev));
		uint64_t lsn = put_reading(dev, 1700000000000 + i, i);
		if(murmur2_partition(dev, NPART) == 2){
			if(!have_stuck) first_stuck = lsn;
			have_stuck = true;
		}else{
			healthy++;
		}
	}
	assert_true(have_stuck && first_stuck > F.sent[0].lsn);
	start_sink(NULL);
	wait_for(delivered_at_least, &healthy, "the healthy partitions' records acknowledged");
	/* every report of the healthy partitions is in: the cursor is at the hole, not past it */
	assert_int_equal(journal_reader_committed(F.r), first_stuck);
	assert_int_equal(METRIC_GET(&F.m, kafka_delivered), healthy);
	static const int tix[] = {T_ENRICHED}, healthy_parts[] = {0, 1}, stuck_part[] = {2};
	consume(tix, 1, healthy_parts, 2, healthy);
	for(size_t i = 0; i < F.ngot; i++){
		assert_int_not_equal(murmur2_partition(F.got[i].key, NPART), 2);
		assert_int_equal(F.got[i].partition, murmur2_partition(F.got[i].key, NPART));
	}
	assert_int_equal(journal_reader_committed(F.r), first_stuck);

	assert_int_equal(rd_kafka_mock_broker_set_up(F.mc, 3), 0);
	wait_cursor_end();
	consume(tix, 1, stuck_part, 1, F.nsent);
	assert_int_equal(check_got(true), 0);
	assert_int_equal(METRIC_GET(&F.m, kafka_delivered), F.nsent);
}

static void test_transient_errors_retried(void **state)
{
	rd_kafka_mock_push_request_errors(F.mc, PRODUCE_API, 7,
			RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
			RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
			RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR);
	char dev[32];
	for(int i = 0; i < 1000; i++){
		devname(i % 25, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	start_sink(NULL);
	wait_cursor_end();
	consume_all_topics(F.nsent);
	size_t dups = check_got(true);
	printf("  duplicates: %zu\n", dups);
	assert_int_equal(METRIC_GET(&F.m, kafka_rejected), 0);
}

/* Every broker away and a user's message.timeout.ms: reports fail transiently, the sink sends again
 * from its cursor until the brokers are back; nothing is lost. */
static void test_brokers_down_then_back(void **state)
{
	for(int b = 1; b <= 3; b++) assert_int_equal(rd_kafka_mock_broker_set_down(F.mc, b), 0);
	char dev[32];
	for(int i = 0; i < 500; i++){
		devname(i % 10, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	static const char *const opts[] = {"kafka.message.timeout.ms", "300", NULL};
	start_sink(opts);
	wait_for(retried, NULL, "a transient failure retried");
	assert_int_equal(journal_reader_committed(F.r), F.sent[0].lsn);
	for(int b = 1; b <= 3; b++) assert_int_equal(rd_kafka_mock_broker_set_up(F.mc, b), 0);
	wait_cursor_end();
	/* more arrive while it runs */
	for(int i = 500; i < 700; i++){
		devname(i % 10, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	wait_cursor_end();
	consume_all_topics(F.nsent);
	/* a retry after a timeout may follow a later record that made it: per-key order holds for the
	 * last copies, which is what a consumer deduplicating by id keeps when it keeps the latest */
	size_t dups = check_got(false);
	printf("  duplicates: %zu, retries: %" PRIu64 "\n", dups, METRIC_GET(&F.m, kafka_retries));
	assert_int_equal(METRIC_GET(&F.m, kafka_rejected), 0);
}

static void test_oversized_record_quarantined(void **state)
{
	char dev[32];
	for(int i = 0; i < 50; i++){
		devname(i % 5, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	static char big[40000];
	memset(big, 'a', sizeof(big));
	uint64_t big_lsn = put_capture_like(REC_QUARANTINE, "devices/dev-002/telemetry", "c", big, sizeof(big), "dev-002");
	uint64_t big_id = F.sent[F.nsent - 1].id;
	for(int i = 50; i < 100; i++){
		devname(i % 5, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	static const char *const opts[] = {"kafka.message.max.bytes", "10000", NULL};
	start_sink(opts);
	wait_cursor_end();
	static const int tix[] = {T_ENRICHED, T_QUARANTINE}, parts[] = {0, 1, 2};
	consume(tix, 2, parts, NPART, 101);
	assert_int_equal(METRIC_GET(&F.m, kafka_rejected), 1);
	assert_int_equal(METRIC_GET(&F.m, kafka_delivered), 100);
	const struct got *q = NULL;
	for(size_t i = 0; i < F.ngot; i++){
		if(!strcmp(F.got[i].topic, "devices.quarantine")) q = &F.got[i];
	}
	assert_non_null(q);
	assert_string_equal(jstr(q->json, "reason"), "sink_rejected");
	assert_string_equal(q->key, "dev-002");
	assert_int_equal(rejected_id(q->json), big_id);
	const char *detail = jstr(q->json, "detail");
	assert_non_null(detail);
	printf("  detail: %s\n", detail ? detail : "(none)");
	assert_non_null(strstr(detail, "too large"));
	char lsn[64];
	snprintf(lsn, sizeof(lsn), "outbox LSN %" PRIu64, big_lsn);
	assert_non_null(strstr(detail, lsn));
	/* the payload is the head of the refused JSON, and says how long the whole was */
	const char *payload = jstr(q->json, "payload");
	assert_non_null(payload);
	assert_true(strlen(payload) <= 10000 / 8);
	assert_memory_equal(payload, "{\"id\":\"", 7);
	assert_true(cJSON_GetObjectItem(q->json, "payloadBytes")->valuedouble > 40000);
	/* the rest went through, in order */
	size_t qi = (size_t)(q - F.got);
	free(F.got[qi].key);
	cJSON_Delete(F.got[qi].json);
	F.got[qi] = F.got[--F.ngot];
	F.nsent--;
	memmove(&F.sent[50], &F.sent[51], 50 * sizeof(F.sent[0]));
	assert_int_equal(check_got(true), 0);
}

/* A broker refusing a batch for good: its records become sink_rejected records, the rest goes on,
 * and every record is accounted for. */
static void rejection_case(rd_kafka_resp_err_t err, const char *text)
{
	rd_kafka_mock_push_request_errors(F.mc, PRODUCE_API, 1, err);
	char dev[32];
	for(int i = 0; i < 300; i++){
		devname(i % 10, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	start_sink(NULL);
	wait_cursor_end();
	uint64_t delivered = METRIC_GET(&F.m, kafka_delivered), rejected = METRIC_GET(&F.m, kafka_rejected);
	printf("  delivered %" PRIu64 ", rejected %" PRIu64 "\n", delivered, rejected);
	assert_true(rejected >= 1);
	assert_int_equal(delivered + rejected, F.nsent);
	static const int tix[] = {T_ENRICHED, T_QUARANTINE}, parts[] = {0, 1, 2};
	consume(tix, 2, parts, NPART, F.nsent);
	unsigned char *seen = calloc(F.nsent, 1);
	size_t nq = 0;
	for(size_t i = 0; i < F.ngot; i++){
		const struct sent *s = sent_by_id(parse_hex(jstr(F.got[i].json, "id")));
		if(!s){
			assert_string_equal(jstr(F.got[i].json, "reason"), "sink_rejected");
			assert_non_null(strstr(jstr(F.got[i].json, "detail"), text));
			s = sent_by_id(rejected_id(F.got[i].json));
			assert_non_null(s);
			assert_string_equal(F.got[i].key, s->key);
			nq++;
		}
		assert_int_equal(seen[s - F.sent]++, 0);
	}
	assert_int_equal(nq, rejected);
	free(seen);
}

static void test_invalid_record_quarantined(void **state)
{
	rejection_case(RD_KAFKA_RESP_ERR_INVALID_RECORD, "Broker: Broker failed to validate record");
}

static void test_topic_authorization_failure_quarantined(void **state)
{
	rejection_case(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed");
}

/* A producer queue of 5 messages: QUEUE_FULL all the time, nothing dropped, nothing reordered. */
static void test_queue_full_loses_nothing(void **state)
{
	char dev[32];
	for(int i = 0; i < 3000; i++){
		devname(i % 40, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	static const char *const opts[] = {"kafka.queue.buffering.max.messages", "5", "kafka.batch.num.messages", "5", NULL};
	start_sink(opts);
	wait_cursor_end();
	consume_all_topics(F.nsent);
	assert_int_equal(check_got(true), 0);
	assert_int_equal(F.ngot, F.nsent);
	assert_int_equal(METRIC_GET(&F.m, kafka_delivered), F.nsent);
}

/* librdkafka raising a fatal error (here: the idempotent producer's sequence lost): a new producer
 * takes over from the cursor. */
static void test_fatal_error_makes_new_producer(void **state)
{
	size_t w = watch_log("producer failed for good");
	char dev[32];
	for(int i = 0; i < 200; i++){
		devname(i % 10, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	start_sink(NULL);
	wait_cursor_end();
	uint64_t at = journal_reader_committed(F.r);
	/* the broker's sequence and the producer's disagree on the next request */
	rd_kafka_mock_push_request_errors(F.mc, PRODUCE_API, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
	for(int i = 200; i < 500; i++){
		devname(i % 10, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	wait_for(log_seen, &w, "the fatal error logged");
	wait_cursor_end();
	assert_true(journal_reader_committed(F.r) > at);
	consume_all_topics(F.nsent);
	size_t dups = check_got(false);
	printf("  duplicates after the new producer: %zu\n", dups);
}

static void test_bad_property_refuses_start(void **state)
{
	static const struct {
		const char *key, *value, *expect;
	} cases[] = {
		{"kafka.linger.ms", "soon", "plugin_opt_kafka.linger.ms: Invalid value"},
		{"kafka.no.such.property", "1", "plugin_opt_kafka.no.such.property: No such configuration property"},
		{"kafka.compression.type", "zip", "plugin_opt_kafka.compression.type: Invalid value"},
		{"kafka.transactional.id", "x", "plugin_opt_kafka.transactional.id: not supported"},
		{"kafka_topic_alert", "no spaces allowed", "plugin_opt_kafka_topic_alert: "},
	};
	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		const char *opts[] = {cases[i].key, cases[i].value, NULL};
		char err[512] = "";
		assert_true(parse_cfg(opts, err, sizeof(err)));
		struct kafka_sink *s = kafka_sink_start(&F.cfg, F.r, &F.m, err, sizeof(err));
		assert_null(s);
		printf("  %s=%s: %s\n", cases[i].key, cases[i].value, err);
		if(strncmp(err, cases[i].expect, strlen(cases[i].expect))) fail_msg("got \"%s\"", err);
	}
	/* every property reaches librdkafka unchanged: SASL and TLS ones are accepted as such */
	static const char *const ok[] = {"kafka.security.protocol", "sasl_plaintext", "kafka.sasl.mechanisms", "PLAIN",
		"kafka.sasl.username", "u", "kafka.sasl.password", "p", "kafka.linger.ms", "20", "kafka.compression.type", "zstd", NULL};
	char err[512] = "";
	assert_true(parse_cfg(ok, err, sizeof(err)));
	struct kafka_sink *s = kafka_sink_start(&F.cfg, F.r, &F.m, err, sizeof(err));
	if(!s) fail_msg("%s", err);
	kafka_sink_stop(s);
}

/* A stop with Kafka away is bounded and moves the cursor over nothing; the next start sends it all. */
static void test_stop_keeps_unacknowledged_for_next_start(void **state)
{
	for(int b = 1; b <= 3; b++) assert_int_equal(rd_kafka_mock_broker_set_down(F.mc, b), 0);
	char dev[32];
	for(int i = 0; i < 200; i++){
		devname(i % 10, dev, sizeof(dev));
		put_reading(dev, 1700000000000 + i, i);
	}
	uint64_t before = journal_reader_committed(F.r);
	start_sink(NULL);
	nap_ms(300);    /* let it read and produce (not required for the assertions) */
	stop_sink();
	assert_int_equal(journal_reader_committed(F.r), before);
	assert_int_equal(METRIC_GET(&F.m, kafka_delivered), 0);
	for(int b = 1; b <= 3; b++) assert_int_equal(rd_kafka_mock_broker_set_up(F.mc, b), 0);
	start_sink(NULL);
	wait_cursor_end();
	consume_all_topics(F.nsent);
	assert_int_equal(check_got(true), 0);
	/* and it resumes from where it stopped, not from the start */
	stop_sink();
	uint64_t at = journal_reader_committed(F.r);
	put_reading("dev-late", 1700000001000, 1);
	start_sink(NULL);
	wait_cursor_end();
	assert_int_equal(METRIC_GET(&F.m, kafka_delivered), 1);
	assert_true(journal_reader_committed(F.r) == at + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_every_kind_delivered_with_key_and_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursor_stops_at_oldest_unacknowledged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transient_errors_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_brokers_down_then_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_record_quarantined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_record_quarantined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_topic_authorization_failure_quarantined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_full_loses_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fatal_error_makes_new_producer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_property_refuses_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_keeps_unacknowledged_for_next_start, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
