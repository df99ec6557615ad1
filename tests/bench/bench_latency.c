/* End-to-end latency of the pipeline, seen from its three outputs, while something else (iotpipe-sim)
 * publishes readings whose "ts" is the wall-clock send time in ms.
 *
 *   bench_latency [--kafka BOOTSTRAP] [--mqtt PORT] [--pg CONNINFO] [--pg-devices N] [--prefix P]
 *                 --seconds S [--skip S0] --out PREFIX
 *
 * Each probe given runs in its own thread:
 *   kafka  a consumer (unique group, auto.offset.reset=latest) of devices.enriched; it also reports
 *          kafka_produced, the same records' ts against their CreateTime, which librdkafka stamps when
 *          the plugin produces them: the plugin's share of the latency, the rest being librdkafka's
 *          batching, the Kafka broker and the consumer;
 *   mqtt   a client of 127.0.0.1:PORT subscribed to alerts/# (QoS 0);
 *   pg     every 10 ms, one query for the rows of metrics of N sample devices (P000000 .. P(N-1),
 *          6 digits, as iotpipe-sim names them; default 20 devices, prefix "dev-") with a ts after
 *          the newest ts seen - 1 s, and once a second (a sweep) after now - 30 s; never before start.
 *          Each (device, ts) row counts once, at the first poll that returns it. The short window
 *          keeps what every poll reads and sends back small (at 25 readings/s per device it would
 *          be 15,000 rows a poll for 30 s); the sink commits rows in ts order but its pool's batches
 *          may commit out of order, and a row that shows up over 1 s (of ts) behind one already
 *          seen is only caught by the next sweep, so its figure can read up to 1 s high.
 * Latency of a record = wall-clock time (CLOCK_REALTIME) when the probe first sees it - its "ts" (or the
 * ts column). As ts is truncated to the ms, figures read up to 1 ms high (resolution ~1 ms); the pg
 * probe adds up to one poll interval (10 ms, 5 ms on average) plus the query's own time.
 *
 * Setup comes first: Kafka partitions assigned (the topic must exist: the plugin's producer makes it
 * when the broker starts), the MQTT subscription acknowledged, a PostgreSQL connection (each retried
 * for up to 30 s, else exit 2). Then "bench_latency: ready" goes to stderr and
 * the clock starts: the probes run for S seconds and records with ts before start + S0 (--skip, default
 * 0: warm-up, and data older than the run) are ignored. While metrics does not exist yet or the
 * connection is lost, the pg probe retries every 200 ms.
 *
 * Output: one line per probe on stdout, in the order kafka, kafka_produced, mqtt, pg,
 *   probe=kafka n=12345 p50_ms=3.1 p99_ms=12.4 p999_ms=20.2 max_ms=31.0
 * (percentiles by nearest rank over every sample; nan when n=0), and PREFIX.<probe>.csv, a histogram:
 * a header "latency_ms,count", then one row per bucket, always the same 10,900 rows: latency_ms is the
 * bucket's upper edge and count the samples in (previous edge, edge]; 0.1 ms buckets up to 100 ms,
 * then 1 ms buckets up to 10,000 ms. The first row also counts latencies <= 0, the last everything
 * above 10 s (max_ms has the true maximum). Errors (bad arguments, a service not reachable): a message
 * on stderr, exit 2. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <mosquitto.h>

#define KAFKA_TOPIC "devices.enriched"
#define SETUP_US 30000000LL             /* how long each probe may take to get ready */
#define PG_POLL_US 10000LL
#define PG_RETRY_US 200000LL
#define PG_SLACK_MS 1000LL              /* each poll asks for rows newer than the newest seen - this, */
#define PG_SWEEP_POLLS 100              /* and every this many polls, */
#define PG_WINDOW_MS 30000LL            /* for those newer than now - this */
#define FINE_BUCKETS 1000               /* 0.1 ms each, up to 100 ms */
#define NBUCKETS (FINE_BUCKETS + 9900)  /* then 1 ms each, up to 10 s */

struct probe {
	const char *name;
	void *(*run)(void *);
	bool on;
	pthread_t thread;
	float *v;                       /* latencies in ms, in arrival order */
	size_t n, cap;
	uint64_t hist[NBUCKETS];
};

enum { P_KAFKA, P_KAFKA_PRODUCED, P_MQTT, P_PG, NPROBES };

/* set before the probe threads start, read-only afterwards */
static int64_t first_ts_ms = INT64_MAX; /* records with an earlier ts are ignored */
static int64_t deadline_us;             /* CLOCK_MONOTONIC */

static __attribute__((format(printf, 1, 2))) void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("bench_latency: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static int64_t clock_us(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_us(void)
{
	return clock_us(CLOCK_REALTIME);
}

static int64_t mono_us(void)
{
	return clock_us(CLOCK_MONOTONIC);
}

static void sleep_until(int64_t mono)
{
	struct timespec ts = {(time_t)(mono / 1000000), (long)(mono % 1000000) * 1000};
	while(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)){
	}
}

/* the number after the first "ts": in a JSON text (not NUL-terminated), or -1 */
static int64_t json_ts(const void *buf, size_t len)
{
	const char *p = memmem(buf, len, "\"ts\":", 5);
	if(!p) return -1;
	p += 5;
	size_t rest = len - (size_t)(p - (const char *)buf);
	char num[32];
	if(rest >= sizeof(num)) rest = sizeof(num) - 1;
	memcpy(num, p, rest);
	num[rest] = '\0';
	char *end;
	long long ts = strtoll(num, &end, 10);
	return end == num ? -1 : ts;
}

/* one record of ts (ms) first seen at now (wall clock, µs) */
static void record(struct probe *p, int64_t ts, int64_t now)
{
	if(ts < first_ts_ms) return;
	int64_t us = now - ts * 1000;
	if(p->n == p->cap){
		p->cap = p->cap ? 2 * p->cap : 65536;
		p->v = realloc(p->v, p->cap * sizeof(*p->v));
		if(!p->v) die("out of memory");
	}
	p->v[p->n++] = (float)((double)us / 1000.0);
	int64_t b;
	if(us <= 100000) b = us <= 100 ? 0 : (us + 99) / 100 - 1;
	else b = FINE_BUCKETS + (us + 999) / 1000 - 101;
	p->hist[b < NBUCKETS ? b : NBUCKETS - 1]++;
}

/* ---- kafka ---- */

static rd_kafka_t *kafka;

static void kafka_setup(const char *bootstrap)
{
	char err[512], group[64];
	snprintf(group, sizeof(group), "bench-latency-%" PRId64, wall_us());
	const char *kv[][2] = {{"bootstrap.servers", bootstrap}, {"group.id", group}, {"auto.offset.reset", "latest"},
		{"enable.auto.commit", "false"}, {"fetch.wait.max.ms", "5"}, {"fetch.min.bytes", "1"}};
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	for(size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++){
		if(rd_kafka_conf_set(c, kv[i][0], kv[i][1], err, sizeof(err))) die("kafka: %s", err);
	}
	if(!(kafka = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err)))) die("kafka: %s", err);
	rd_kafka_poll_set_consumer(kafka);
	rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(t, KAFKA_TOPIC, RD_KAFKA_PARTITION_UA);
	rd_kafka_resp_err_t e = rd_kafka_subscribe(kafka, t);
	rd_kafka_topic_partition_list_destroy(t);
	if(e) die("kafka: subscribe: %s", rd_kafka_err2str(e));
	for(int64_t end = mono_us() + SETUP_US; mono_us() < end;){
		rd_kafka_message_t *m = rd_kafka_consumer_poll(kafka, 100);
		if(m) rd_kafka_message_destroy(m);
		rd_kafka_topic_partition_list_t *a = NULL;
		bool assigned = !rd_kafka_assignment(kafka, &a) && a->cnt > 0;
		if(a) rd_kafka_topic_partition_list_destroy(a);
		if(assigned) return;
	}
	die("kafka: no partition of %s assigned within %lld s (is a broker at %s, and the plugin started, which makes the"
			" topic?)", KAFKA_TOPIC, SETUP_US / 1000000, bootstrap);
}

static void *kafka_run(void *arg)
{
	struct probe *p = arg, *produced = p + (P_KAFKA_PRODUCED - P_KAFKA);
	while(mono_us() < deadline_us){
		rd_kafka_message_t *m = rd_kafka_consumer_poll(kafka, 10);
		if(!m) continue;
		int64_t now = wall_us();
		if(!m->err){
			int64_t ts = json_ts(m->payload, m->len);
			rd_kafka_timestamp_type_t tt;
			int64_t created = rd_kafka_message_timestamp(m, &tt);
			if(ts >= 0) record(p, ts, now);
			/* the part of it before librdkafka: the producer stamps CreateTime at produce time */
			if(ts >= 0 && tt == RD_KAFKA_TIMESTAMP_CREATE_TIME) record(produced, ts, created * 1000);
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(kafka);
	rd_kafka_destroy(kafka);
	return NULL;
}

/* ---- mqtt ---- */

static struct mosquitto *mqtt;
static bool mqtt_subscribed;
static int mqtt_refused = -1;

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
	if(rc) mqtt_refused = rc;
	else mosquitto_subscribe(m, NULL, "alerts/#", 0);
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int n, const int *granted)
{
	mqtt_subscribed = true;
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
	int64_t now = wall_us();
	int64_t ts = json_ts(msg->payload, (size_t)msg->payloadlen);
	if(ts >= 0) record(arg, ts, now);
}

static void mqtt_setup(int port, struct probe *p)
{
	if(!(mqtt = mosquitto_new(NULL, true, p))) die("mqtt: out of memory");
	mosquitto_connect_callback_set(mqtt, on_connect);
	mosquitto_subscribe_callback_set(mqtt, on_subscribe);
	mosquitto_message_callback_set(mqtt, on_message);
	int64_t end = mono_us() + SETUP_US;
	int rc;
	while((rc = mosquitto_connect(mqtt, "127.0.0.1", port, 60)) != MOSQ_ERR_SUCCESS){
		if(mono_us() >= end) die("mqtt: cannot connect to 127.0.0.1:%d: %s", port, mosquitto_strerror(rc));
		sleep_until(mono_us() + 200000);
	}
	while(!mqtt_subscribed){
		if(mono_us() >= end) die("mqtt: no SUBACK from 127.0.0.1:%d within %lld s", port, SETUP_US / 1000000);
		if((rc = mosquitto_loop(mqtt, 100, 1)) != MOSQ_ERR_SUCCESS) die("mqtt: %s", mosquitto_strerror(rc));
		if(mqtt_refused >= 0) die("mqtt: connection refused: %s", mosquitto_connack_string(mqtt_refused));
	}
}

static void *mqtt_run(void *arg)
{
	bool ok = true;
	while(mono_us() < deadline_us){
		int rc = mosquitto_loop(mqtt, 10, 1);
		if(rc == MOSQ_ERR_SUCCESS){
			ok = true;
			continue;
		}
		if(ok) fprintf(stderr, "bench_latency: mqtt: %s, reconnecting\n", mosquitto_strerror(rc));
		ok = false;
		sleep_until(mono_us() + 200000);
		mosquitto_reconnect(mqtt);
	}
	mosquitto_disconnect(mqtt);
	mosquitto_destroy(mqtt);
	return NULL;
}

/* ---- pg ---- */

/* (ts, device index) pairs already counted: open addressing on ts << 20 | index (ts < 2^44 ms) */
struct seen {
	uint64_t *slot;                 /* 0 = empty */
	size_t cap, n;
};

static size_t seen_home(const struct seen *s, uint64_t k)
{
	return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 32) & (s->cap - 1);
}

static bool seen_add(struct seen *s, uint64_t k)
{
	size_t i = seen_home(s, k);
	while(s->slot[i] && s->slot[i] != k) i = (i + 1) & (s->cap - 1);
	if(s->slot[i]) return false;
	s->slot[i] = k;
	s->n++;
	return true;
}

/* makes room for one more key, dropping those with ts <= bound (never returned again) */
static void seen_reserve(struct seen *s, int64_t bound)
{
	if(s->cap && 2 * (s->n + 1) <= s->cap) return;
	struct seen old = *s;
	size_t live = 0;
	for(size_t i = 0; i < old.cap; i++) live += old.slot[i] && (int64_t)(old.slot[i] >> 20) > bound;
	for(s->cap = 4096; s->cap < 4 * (live + 1); s->cap *= 2){
	}
	s->n = 0;
	if(!(s->slot = calloc(s->cap, sizeof(*s->slot)))) die("out of memory");
	for(size_t i = 0; i < old.cap; i++){
		if(old.slot[i] && (int64_t)(old.slot[i] >> 20) > bound) seen_add(s, old.slot[i]);
	}
	free(old.slot);
}

static PGconn *pg;
static const char *pg_prefix = "dev-";
static char *pg_devices;                /* the text[] literal of the sample devices */

static void pg_setup(const char *conninfo, int ndev)
{
	size_t plen = strlen(pg_prefix), cap = (size_t)ndev * (2 * plen + 10) + 3, len = 0;
	if(!(pg_devices = malloc(cap))) die("out of memory");
	pg_devices[len++] = '{';
	for(int d = 0; d < ndev; d++){
		if(d) pg_devices[len++] = ',';
		pg_devices[len++] = '"';
		for(const char *c = pg_prefix; *c; c++){
			if(*c == '"' || *c == '\\') pg_devices[len++] = '\\';
			pg_devices[len++] = *c;
		}
		len += (size_t)snprintf(pg_devices + len, cap - len, "%06d\"", d);
	}
	pg_devices[len++] = '}';
	pg_devices[len] = '\0';
	int64_t end = mono_us() + SETUP_US;
	while(PQstatus(pg = PQconnectdb(conninfo)) != CONNECTION_OK){
		if(mono_us() >= end){
			const char *e = PQerrorMessage(pg);
			die("pg: cannot connect: %.*s", (int)strcspn(e, "\n"), e);
		}
		PQfinish(pg);
		sleep_until(mono_us() + PG_RETRY_US);
	}
}

static void *pg_run(void *arg)
{
	static const char sql[] = "SELECT device_id, (extract(epoch from ts) * 1000)::bigint FROM metrics "
		"WHERE device_id = ANY($1::text[]) AND ts > to_timestamp($2::float8 / 1000)";
	struct probe *p = arg;
	struct seen seen = {0};
	size_t plen = strlen(pg_prefix);
	int64_t newest = 0;
	bool ok = true, prepared = false;
	for(int64_t next = mono_us(), polls = 0; next < deadline_us; polls++){
		/* rows with ts <= wide are never asked for again: seen forgets them */
		int64_t wide = wall_us() / 1000 - PG_WINDOW_MS;
		if(wide < first_ts_ms - 1) wide = first_ts_ms - 1;
		int64_t bound = wide;
		if(polls % PG_SWEEP_POLLS && bound < newest - PG_SLACK_MS) bound = newest - PG_SLACK_MS;
		char b[24];
		snprintf(b, sizeof(b), "%" PRId64, bound);
		const char *params[2] = {pg_devices, b};
		/* prepared once per connection: planning would cost about as much as running it */
		PGresult *r = prepared ? NULL : PQprepare(pg, "probe", sql, 2, NULL);
		if(!prepared && PQresultStatus(r) == PGRES_COMMAND_OK){
			prepared = true;
			PQclear(r);
		}
		if(prepared) r = PQexecPrepared(pg, "probe", 2, params, NULL, NULL, 0);
		int64_t now = wall_us();
		if(PQresultStatus(r) == PGRES_TUPLES_OK){
			ok = true;
			for(int i = 0; i < PQntuples(r); i++){
				const char *dev = PQgetvalue(r, i, 0);
				int64_t ts = strtoll(PQgetvalue(r, i, 1), NULL, 10);
				if(strncmp(dev, pg_prefix, plen) || ts <= 0) continue;
				seen_reserve(&seen, wide);
				if(seen_add(&seen, (uint64_t)ts << 20 | (uint64_t)strtoul(dev + plen, NULL, 10))) record(p, ts, now);
				if(ts > newest && ts <= now / 1000) newest = ts;  /* not from a device's wrong clock */
			}
			next += PG_POLL_US;
		}else{
			/* metrics not made yet, or the server went away */
			if(ok) fprintf(stderr, "bench_latency: pg: retrying every 200 ms: %s", PQerrorMessage(pg));
			ok = false;
			if(PQstatus(pg) != CONNECTION_OK){
				PQreset(pg);
				prepared = false;
			}
			next = mono_us() + PG_RETRY_US;
		}
		PQclear(r);
		int64_t t = mono_us();
		if(next < t) next = t;  /* a slow query: the next one at once, no catching up */
		sleep_until(next < deadline_us ? next : deadline_us);
	}
	free(seen.slot);
	PQfinish(pg);
	free(pg_devices);
	return NULL;
}

/* ---- main ---- */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* nearest rank */
static double pct(const struct probe *p, double q)
{
	if(!p->n) return NAN;
	size_t k = (size_t)ceil(q * (double)p->n);
	return p->v[k ? k - 1 : 0];
}

static bool report(struct probe *p, const char *out)
{
	qsort(p->v, p->n, sizeof(*p->v), cmp_float);
	printf("probe=%s n=%zu p50_ms=%.1f p99_ms=%.1f p999_ms=%.1f max_ms=%.1f\n", p->name, p->n, pct(p, 0.5),
			pct(p, 0.99), pct(p, 0.999), p->n ? (double)p->v[p->n - 1] : NAN);
	char path[4096];
	snprintf(path, sizeof(path), "%s.%s.csv", out, p->name);
	FILE *f = fopen(path, "w");
	if(!f){
		fprintf(stderr, "bench_latency: %s: cannot write\n", path);
		return false;
	}
	fprintf(f, "latency_ms,count\n");
	for(int b = 0; b < NBUCKETS; b++){
		double edge = b < FINE_BUCKETS ? (b + 1) / 10.0 : 101.0 + (b - FINE_BUCKETS);
		fprintf(f, "%.1f,%" PRIu64 "\n", edge, p->hist[b]);
	}
	bool ok = !ferror(f);
	if(fclose(f) || !ok){
		fprintf(stderr, "bench_latency: %s: write failed\n", path);
		return false;
	}
	return true;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_latency [--kafka BOOTSTRAP] [--mqtt PORT] [--pg CONNINFO] [--pg-devices N]\n"
		"                     [--prefix P] --seconds S [--skip S0] --out PREFIX\n"
		"  --kafka BOOTSTRAP   consume %s from these brokers\n"
		"  --mqtt PORT         subscribe to alerts/# on 127.0.0.1:PORT\n"
		"  --pg CONNINFO       poll table metrics every 10 ms for N sample devices\n"
		"  --pg-devices N      how many (default 20): P000000 .. P(N-1), 6 digits\n"
		"  --prefix P          device id prefix (default dev-)\n"
		"  --seconds S         how long to measure, once the probes are ready\n"
		"  --skip S0           ignore records with ts in the first S0 seconds (default 0)\n"
		"  --out PREFIX        histograms go to PREFIX.<probe>.csv\n"
		"Prints \"probe=NAME n=N p50_ms=.. p99_ms=.. p999_ms=.. max_ms=..\" per probe.\n", KAFKA_TOPIC);
}

static double num_arg(const char *opt, const char *s, double lo, double hi)
{
	char *end;
	double v = strtod(s, &end);
	if(end == s || *end || !(v >= lo && v <= hi)) die("bad %s '%s' (try --help)", opt, s);
	return v;
}

int main(int argc, char **argv)
{
	static const struct option longs[] = {{"kafka", required_argument, NULL, 'k'},
		{"mqtt", required_argument, NULL, 'm'}, {"pg", required_argument, NULL, 'p'},
		{"pg-devices", required_argument, NULL, 'n'}, {"prefix", required_argument, NULL, 'x'},
		{"seconds", required_argument, NULL, 's'}, {"skip", required_argument, NULL, 'S'},
		{"out", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	static struct probe probes[NPROBES] = {
		[P_KAFKA] = {.name = "kafka", .run = kafka_run},
		[P_KAFKA_PRODUCED] = {.name = "kafka_produced"},   /* filled by kafka_run */
		[P_MQTT] = {.name = "mqtt", .run = mqtt_run},
		[P_PG] = {.name = "pg", .run = pg_run},
	};
	const char *bootstrap = NULL, *conninfo = NULL, *out = NULL;
	int port = 0, ndev = 20;
	double seconds = 0, skip = 0;
	int c;
	while((c = getopt_long(argc, argv, "", longs, NULL)) != -1){
		switch(c){
		case 'k': bootstrap = optarg; break;
		case 'm': port = (int)num_arg("--mqtt", optarg, 1, 65535); break;
		case 'p': conninfo = optarg; break;
		case 'n': ndev = (int)num_arg("--pg-devices", optarg, 1, 1000000); break;
		case 'x': pg_prefix = optarg; break;
		case 's': seconds = num_arg("--seconds", optarg, 0.001, 1e6); break;
		case 'S': skip = num_arg("--skip", optarg, 0, 1e6); break;
		case 'o': out = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if(optind < argc) die("unexpected argument '%s' (try --help)", argv[optind]);
	if(!seconds || !out) die("--seconds and --out are required (try --help)");
	if(skip >= seconds) die("--skip must be less than --seconds");
	if(!bootstrap && !port && !conninfo) die("no probe: give --kafka, --mqtt and/or --pg");
	probes[P_KAFKA].on = probes[P_KAFKA_PRODUCED].on = bootstrap;
	probes[P_MQTT].on = port;
	probes[P_PG].on = conninfo;

	mosquitto_lib_init();
	if(bootstrap) kafka_setup(bootstrap);
	if(port) mqtt_setup(port, &probes[P_MQTT]);
	if(conninfo) pg_setup(conninfo, ndev);
	int64_t start = wall_us();
	first_ts_ms = (start + (int64_t)(skip * 1e6) + 999) / 1000;
	deadline_us = mono_us() + (int64_t)(seconds * 1e6);
	fprintf(stderr, "bench_latency: ready\n");
	for(int i = 0; i < NPROBES; i++){
		if(probes[i].on && probes[i].run && pthread_create(&probes[i].thread, NULL, probes[i].run, &probes[i])) die("pthread_create failed");
	}
	bool ok = true;
	for(int i = 0; i < NPROBES; i++){
		if(!probes[i].on) continue;
		if(probes[i].run) pthread_join(probes[i].thread, NULL);
		ok = report(&probes[i], out) && ok;
		free(probes[i].v);
	}
	mosquitto_lib_cleanup();
	return ok ? 0 : 2;
}
