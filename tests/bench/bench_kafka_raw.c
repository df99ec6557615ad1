/* Kafka sink throughput against a raw librdkafka producer, to one real broker.
 *
 *   bench_kafka_raw raw  BOOTSTRAP TOPIC N     a bare producer sends N ready-made messages
 *   bench_kafka_raw sink BOOTSTRAP TOPIC N     the Kafka sink sends N outbox records
 *
 * Both send the same messages: enriched records of 100 devices, JSON from outrec_to_json, key =
 * deviceId, the same two headers, with the sink's producer defaults, to the same topic (so the same
 * partitions). The raw producer gets its payloads, keys and id headers built before the clock starts; the sink's clock
 * runs from kafka_sink_start until its cursor is past the last record, so it pays for reading the
 * journal, decoding, JSON and the ring. Prints "mode=... records=N seconds=S rate=R thread_ns=T rdk_ns=K":
 * T is the CPU time per record of the producing thread (the raw loop; the sink thread), K that of
 * librdkafka's threads (batching, compression, sockets), both from /proc's schedstat. */
#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "bench_reading.h"
#include "config.h"
#include "journal.h"
#include "kafka_sink.h"
#include "metrics.h"
#include "record.h"

#define DEVICES 100

/* Keep in step with ks_defaults in src/kafka_sink.c: the raw producer must be configured alike. */
static const char *const sink_defaults[][2] = {
	{"client.id", "iotpipe"}, {"enable.idempotence", "true"}, {"acks", "all"}, {"message.timeout.ms", "0"},
	{"linger.ms", "5"}, {"batch.num.messages", "10000"}, {"batch.size", "1000000"}, {"compression.type", "lz4"},
	{"queue.buffering.max.messages", "100000"}, {"queue.buffering.max.kbytes", "65536"},
	{"partitioner", "murmur2_random"}, {"socket.keepalive.enable", "true"},
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* the i-th record: a reading of device i % DEVICES */
static void make_record(uint64_t i, struct outrec *r, char *dev, size_t cap)
{
	snprintf(dev, cap, "bench-%06d", (int)(i % DEVICES));
	*r = bench_reading(i, dev);
}

/* CPU time (ns, from /proc's schedstat) of this process's threads whose name starts with prefix, or of
 * the calling thread when prefix is NULL */
static uint64_t threads_cpu_ns(const char *prefix)
{
	char path[300], comm[64];
	uint64_t sum = 0;
	if(!prefix){
		snprintf(path, sizeof(path), "/proc/thread-self/schedstat");
		FILE *f = fopen(path, "r");
		unsigned long long ns = 0;
		if(f && fscanf(f, "%llu", &ns) != 1) ns = 0;
		if(f) fclose(f);
		return ns;
	}
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	while(d && (de = readdir(d))){
		if(de->d_name[0] == '.') continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		FILE *f = fopen(path, "r");
		if(!f) continue;
		bool match = fgets(comm, sizeof(comm), f) && !strncmp(comm, prefix, strlen(prefix));
		fclose(f);
		if(!match) continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", de->d_name);
		unsigned long long ns = 0;
		if((f = fopen(path, "r"))){
			if(fscanf(f, "%llu", &ns) == 1) sum += ns;
			fclose(f);
		}
	}
	if(d) closedir(d);
	return sum;
}

static uint64_t delivered;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	if(m->err){
		fprintf(stderr, "bench: delivery failed: %s\n", rd_kafka_err2str(m->err));
		exit(1);
	}
	delivered++;
}

static int run_raw(const char *bootstrap, const char *topic, uint64_t n)
{
	/* payloads first, off the clock */
	char **json = malloc(n * sizeof(*json));
	uint32_t *len = malloc(n * sizeof(*len));
	char (*hex)[17] = malloc(n * sizeof(*hex));
	char buf[4096], dev[DEVICES][64];
	for(uint64_t i = 0; i < n; i++){
		struct outrec r;
		make_record(i, &r, dev[i % DEVICES], sizeof(dev[0]));
		len[i] = (uint32_t)outrec_to_json(&r, buf, sizeof(buf));
		json[i] = malloc(len[i]);
		memcpy(json[i], buf, len[i]);
		snprintf(hex[i], sizeof(hex[i]), "%016" PRIx64, r.id);
	}
	char err[512];
	double t0 = now_s();
	uint64_t cpu0 = threads_cpu_ns(NULL);
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	for(size_t i = 0; i < sizeof(sink_defaults) / sizeof(sink_defaults[0]); i++){
		rd_kafka_conf_set(c, sink_defaults[i][0], sink_defaults[i][1], err, sizeof(err));
	}
	if(rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, err, sizeof(err))){
		fprintf(stderr, "bench: %s\n", err);
		return 1;
	}
	rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
	if(!rk){
		fprintf(stderr, "bench: %s\n", err);
		return 1;
	}
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	for(uint64_t i = 0; i < n; i++){
		const char *key = dev[i % DEVICES];
		for(;;){
			rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					RD_KAFKA_V_VALUE(json[i], len[i]), RD_KAFKA_V_KEY(key, strlen(key)),
					RD_KAFKA_V_HEADER("id", hex[i], 16), RD_KAFKA_V_HEADER("content-type", "application/json", 16),
					RD_KAFKA_V_END);
			if(!e) break;
			if(e != RD_KAFKA_RESP_ERR__QUEUE_FULL){
				fprintf(stderr, "bench: produce: %s\n", rd_kafka_err2str(e));
				return 1;
			}
			rd_kafka_poll(rk, 10);
		}
		if(i % 1024 == 0) rd_kafka_poll(rk, 0);
	}
	while(delivered < n) rd_kafka_poll(rk, 10);
	double t = now_s() - t0;
	uint64_t cpu = threads_cpu_ns(NULL) - cpu0, rdk = threads_cpu_ns("rdk:");
	printf("mode=raw records=%" PRIu64 " seconds=%.3f rate=%.0f thread_ns=%.0f rdk_ns=%.0f\n", n, t, (double)n / t,
			(double)cpu / (double)n, (double)rdk / (double)n);
	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	for(uint64_t i = 0; i < n; i++) free(json[i]);
	free(json);
	free(len);
	free(hex);
	return 0;
}

static int run_sink(const char *bootstrap, const char *topic, uint64_t n)
{
	char dir[] = "/tmp/iotpipe-bench-kafka-XXXXXX", err[512];
	if(!mkdtemp(dir)){
		perror("mkdtemp");
		return 1;
	}
	struct journal_opts o = {.dir = dir, .max_bytes = 8ull << 30, .segment_bytes = 64u << 20, .readers = {"kafka", NULL}};
	struct journal *j = journal_open(&o, err, sizeof(err));
	if(!j){
		fprintf(stderr, "bench: %s\n", err);
		return 1;
	}
	uint8_t body[4096];
	char dev[64];
	for(uint64_t i = 0; i < n; i++){
		struct outrec r;
		make_record(i, &r, dev, sizeof(dev));
		struct iovec iov = {body, outrec_encode(&r, body, sizeof(body))};
		if(journal_append(j, REC_ENRICHED, &iov, 1, NULL) != JOURNAL_OK){
			fprintf(stderr, "bench: journal append failed\n");
			return 1;
		}
	}
	struct journal_stats st;
	journal_get_stats(j, &st);
	struct config_kv kv[] = {{"kafka_brokers", bootstrap}, {"kafka_topic_enriched", topic}};
	struct config cfg;
	if(!config_parse(kv, 2, &cfg, err, sizeof(err))){
		fprintf(stderr, "bench: %s\n", err);
		return 1;
	}
	static struct metrics m;
	struct journal_reader *rd = journal_reader(j, "kafka");
	double t0 = now_s();
	struct kafka_sink *s = kafka_sink_start(&cfg, rd, &m, err, sizeof(err));
	if(!s){
		fprintf(stderr, "bench: %s\n", err);
		return 1;
	}
	while(journal_reader_committed(rd) < st.next_lsn){
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	double t = now_s() - t0;
	uint64_t cpu = threads_cpu_ns("iotpipe-kafka"), rdk = threads_cpu_ns("rdk:");
	printf("mode=sink records=%" PRIu64 " seconds=%.3f rate=%.0f thread_ns=%.0f rdk_ns=%.0f\n", n, t, (double)n / t,
			(double)cpu / (double)n, (double)rdk / (double)n);
	kafka_sink_stop(s);
	config_free(&cfg);
	journal_close(j);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if(argc != 5 || (strcmp(argv[1], "raw") && strcmp(argv[1], "sink"))){
		fprintf(stderr, "usage: bench_kafka_raw raw|sink BOOTSTRAP TOPIC N\n");
		return 2;
	}
	uint64_t n = strtoull(argv[4], NULL, 10);
	return !strcmp(argv[1], "raw") ? run_raw(argv[2], argv[3], n) : run_sink(argv[2], argv[3], n);
}
