/* iotpipe-sim: a device fleet simulator and MQTT load generator on libmosquitto.
 *
 * N devices over M connections publish telemetry in the reference JSON form (or multi-reading, or
 * SenML) at a set rate or as fast as the broker takes it, with realistic signals (daily cycle, drift,
 * noise), injected spikes, bad payloads and duplicates at chosen rates. Every payload carries "seq"
 * and "sentUs" so latency can be measured downstream. At the end, QoS 0 connections send one QoS 1
 * fence: MQTT keeps a connection's order, so its PUBACK means the broker has taken everything before
 * it, and the reported rate is what the broker absorbed, not what the client queued. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

enum format { FMT_REF, FMT_MULTI, FMT_SENML };

struct opts {
	const char *host;
	int port;
	int connections;
	int devices;
	uint64_t count;             /* total messages; 0 = until duration ends */
	double duration_s;          /* 0 = until count */
	double rate;                /* total msg/s; 0 = as fast as the broker takes them */
	int qos;
	int window;                 /* messages in flight per connection */
	enum format format;
	double bad_rate, dup_rate, spike_rate;
	const char *topic;          /* with {deviceId} */
	const char *prefix;
	const char *registry;
	double threshold;
	bool quiet;
};

struct conn {
	struct opts *o;
	int index;
	pthread_t thread;
	struct mosquitto *mosq;
	uint64_t quota;
	_Atomic uint64_t sent, acked, failed, bad, dups;
	int first_dev, ndev, next_dev;
	int64_t *last_ts;           /* per device of this connection: ts strictly increasing */
	uint64_t rng;
	int fence_mid;
	_Atomic bool fence_acked;
	bool connected;
	char last_payload[512];
	int last_len;
	char last_topic[256];
};

static _Atomic bool stop_all;
static int64_t t0_us;

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64: small, fast, good enough for load shapes */
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

static void device_id(const struct opts *o, int dev, char *out, size_t cap)
{
	snprintf(out, cap, "%s%06d", o->prefix, dev);
}

static void topic_for(const struct opts *o, const char *dev, char *out, size_t cap)
{
	const char *ph = strstr(o->topic, "{deviceId}");
	if(!ph) snprintf(out, cap, "%s", o->topic);
	else snprintf(out, cap, "%.*s%s%s", (int)(ph - o->topic), o->topic, dev, ph + 10);
}

/* a plausible temperature: daily cycle, a per-device offset, a slow drift (a period of hours that
 * differs per device), noise; sometimes a spike */
static double signal(struct conn *c, int dev, int64_t ts_ms, bool *spike)
{
	double day = 2 * M_PI * (double)(ts_ms % 86400000) / 86400000.0;
	double drift_period_ms = 3600000.0 * (2 + dev % 5);
	double drift = 0.8 * sin(2 * M_PI * fmod((double)ts_ms, drift_period_ms) / drift_period_ms + dev);
	double v = 20.0 + 3.0 * sin(day) + 0.5 * sin(dev * 0.7) + drift + (rng_unit(&c->rng) - 0.5) * 0.4;
	*spike = c->o->spike_rate > 0 && rng_unit(&c->rng) < c->o->spike_rate;
	if(*spike) v += 15.0 + 10.0 * rng_unit(&c->rng);
	return v;
}

/* the kinds of bad payload a real fleet sends: each must end in quarantine with its reason */
static int bad_payload(struct conn *c, const char *id, char *buf, size_t cap)
{
	switch(rng_next(&c->rng) % 8){
	case 0: return snprintf(buf, cap, "not json at all");
	case 1: return snprintf(buf, cap, "{\"deviceId\":");
	case 2: return snprintf(buf, cap, "[]");
	case 3: return snprintf(buf, cap, "{\"deviceId\":\"%s\"}", id);
	case 4: return snprintf(buf, cap, "{\"deviceId\":\"%s\",\"value\":\"warm\"}", id);
	case 5: return snprintf(buf, cap, "{\"deviceId\":\"%s\",\"value\":1e999}", id);
	case 6: return snprintf(buf, cap, "{\"deviceId\":\"%s\",\"value\":null}", id);
	default: return snprintf(buf, cap, "42");
	}
}

static int make_payload(struct conn *c, int dev, char *buf, size_t cap)
{
	char id[64];
	device_id(c->o, dev, id, sizeof(id));
	int64_t *last = &c->last_ts[dev - c->first_dev];
	int64_t us = now_us();
	int64_t ts = us / 1000;
	if(ts <= *last) ts = *last + 1;
	*last = ts;
	uint64_t seq = atomic_load(&c->sent);
	if(c->o->bad_rate > 0 && rng_unit(&c->rng) < c->o->bad_rate){
		atomic_fetch_add(&c->bad, 1);
		return bad_payload(c, id, buf, cap);
	}
	bool spike;
	double v = signal(c, dev, ts, &spike);
	switch(c->o->format){
	case FMT_MULTI:
		return snprintf(buf, cap, "{\"deviceId\":\"%s\",\"ts\":%" PRId64 ",\"readings\":{\"temp\":%.3f,\"hum\":%.2f},"
				"\"seq\":%" PRIu64 ",\"sentUs\":%" PRId64 "}", id, ts, v, 45.0 + (v - 20.0), seq, us);
	case FMT_SENML:
		return snprintf(buf, cap, "[{\"bn\":\"%s:\",\"bt\":%.3f,\"n\":\"temp\",\"u\":\"Cel\",\"v\":%.3f},"
				"{\"n\":\"hum\",\"u\":\"%%RH\",\"v\":%.2f}]", id, (double)ts / 1000.0, v, 45.0 + (v - 20.0));
	default:
		return snprintf(buf, cap, "{\"deviceId\":\"%s\",\"sensorId\":\"temp\",\"value\":%.3f,\"ts\":%" PRId64
				",\"seq\":%" PRIu64 ",\"sentUs\":%" PRId64 "}", id, v, ts, seq, us);
	}
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
	struct conn *c = ud;
	if(mid == c->fence_mid){
		atomic_store(&c->fence_acked, true);
		return;
	}
	atomic_fetch_add(&c->acked, 1);
}

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
	struct conn *c = ud;
	if(rc == 0) c->connected = true;
	else fprintf(stderr, "iotpipe-sim: connection %d refused: %s\n", c->index, mosquitto_connack_string(rc));
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct opts *o = c->o;
	char cid[64], topic[256], dev[64], payload[512];
	snprintf(cid, sizeof(cid), "iotpipe-sim-%d-%d", (int)getpid(), c->index);
	c->mosq = mosquitto_new(cid, true, c);
	if(!c->mosq) return NULL;
	mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	mosquitto_max_inflight_messages_set(c->mosq, (unsigned)o->window);
	mosquitto_connect_callback_set(c->mosq, on_connect);
	mosquitto_publish_callback_set(c->mosq, on_publish);
	if(mosquitto_connect(c->mosq, o->host, o->port, 60) != MOSQ_ERR_SUCCESS){
		fprintf(stderr, "iotpipe-sim: cannot connect to %s:%d\n", o->host, o->port);
		return NULL;
	}
	while(!c->connected && !atomic_load(&stop_all)){
		if(mosquitto_loop(c->mosq, 100, 1) != MOSQ_ERR_SUCCESS) usleep(100000);
	}
	double start = mono_s(), per_conn_rate = o->rate / o->connections;
	while(!atomic_load(&stop_all)){
		uint64_t sent = atomic_load(&c->sent);
		if(c->quota && sent >= c->quota) break;
		if(o->duration_s > 0 && mono_s() - start >= o->duration_s) break;
		int burst = 0;
		while(burst < 64 && sent - atomic_load(&c->acked) - atomic_load(&c->failed) < (uint64_t)o->window
				&& (!c->quota || sent < c->quota)
				&& (per_conn_rate <= 0 || (double)sent < (mono_s() - start) * per_conn_rate)){
			int d = c->first_dev + c->next_dev;
			c->next_dev = (c->next_dev + 1) % c->ndev;
			int len;
			if(o->dup_rate > 0 && c->last_len > 0 && rng_unit(&c->rng) < o->dup_rate){
				memcpy(payload, c->last_payload, (size_t)c->last_len);
				len = c->last_len;
				snprintf(topic, sizeof(topic), "%s", c->last_topic);
				atomic_fetch_add(&c->dups, 1);
			}else{
				device_id(o, d, dev, sizeof(dev));
				topic_for(o, dev, topic, sizeof(topic));
				len = make_payload(c, d, payload, sizeof(payload));
				memcpy(c->last_payload, payload, (size_t)len);
				c->last_len = len;
				snprintf(c->last_topic, sizeof(c->last_topic), "%s", topic);
			}
			if(mosquitto_publish(c->mosq, NULL, topic, len, payload, o->qos, false) != MOSQ_ERR_SUCCESS){
				atomic_fetch_add(&c->failed, 1);
			}
			sent = atomic_fetch_add(&c->sent, 1) + 1;
			burst++;
		}
		int rc = mosquitto_loop(c->mosq, burst ? 0 : 1, 1);
		if(rc != MOSQ_ERR_SUCCESS){
			fprintf(stderr, "iotpipe-sim: connection %d: %s; reconnecting\n", c->index, mosquitto_strerror(rc));
			usleep(200000);
			mosquitto_reconnect(c->mosq);
		}
	}
	/* the fence: its PUBACK means every earlier message on this connection reached the broker */
	mosquitto_publish(c->mosq, &c->fence_mid, "iotpipe-sim/fence", 0, NULL, 1, false);
	double deadline = mono_s() + 120;
	while((!atomic_load(&c->fence_acked) || (o->qos > 0 && atomic_load(&c->acked) + atomic_load(&c->failed) < atomic_load(&c->sent)))
			&& mono_s() < deadline){
		mosquitto_loop(c->mosq, 10, 1);
	}
	mosquitto_disconnect(c->mosq);
	mosquitto_loop(c->mosq, 10, 1);
	mosquitto_destroy(c->mosq);
	return NULL;
}

static bool write_registry(const struct opts *o)
{
	FILE *f = fopen(o->registry, "w");
	if(!f){
		perror(o->registry);
		return false;
	}
	fprintf(f, "{\"devices\":[\n");
	for(int d = 0; d < o->devices; d++){
		char id[64];
		device_id(o, d, id, sizeof(id));
		fprintf(f, "%s{\"deviceId\":\"%s\",\"location\":\"site-%d\",\"zone\":\"z%d\",\"deviceType\":\"thermo-hygrometer\","
				"\"sensors\":[{\"sensorId\":\"temp\",\"unit\":\"Cel\",\"min\":-50,\"max\":150,\"threshold\":%g},"
				"{\"sensorId\":\"hum\",\"unit\":\"%%RH\",\"min\":0,\"max\":100}]}\n",
				d ? "," : "", id, d % 50, d % 8, o->threshold);
	}
	fprintf(f, "]}\n");
	return fclose(f) == 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: iotpipe-sim [options]\n"
		"  -H, --host HOST         broker (default 127.0.0.1)\n"
		"  -p, --port PORT         (default 1883)\n"
		"  -d, --devices N         devices in the fleet (default 100)\n"
		"  -c, --connections M     MQTT connections they share (default 4)\n"
		"  -n, --count N           messages in all, then stop\n"
		"  -t, --duration S        seconds, then stop (default 10 when no count)\n"
		"  -r, --rate R            messages per second in all (default: as fast as the broker takes them)\n"
		"      --device-rate R     messages per second per device (the total is R x devices)\n"
		"  -q, --qos 0|1           (default 1)\n"
		"  -w, --window N          messages in flight per connection (default 1000)\n"
		"  -f, --format F          ref | multi | senml (default ref)\n"
		"      --bad R             fraction of bad payloads (0..1)\n"
		"      --dup R             fraction of duplicates (the previous message again)\n"
		"      --spike R           fraction of spikes (+15..25 on the signal)\n"
		"      --threshold T       threshold in the generated registry (default 30)\n"
		"      --topic PATTERN     (default devices/{deviceId}/telemetry)\n"
		"      --prefix P          device id prefix (default dev-)\n"
		"      --registry FILE     write a registry for this fleet and exit\n"
		"      --quiet             no progress line\n"
		"The last line is a summary: sent, acked, failed, bad, dups, seconds, rate.\n");
}

int main(int argc, char **argv)
{
	struct opts o = {.host = "127.0.0.1", .port = 1883, .connections = 4, .devices = 100, .qos = 1, .window = 1000,
		.topic = "devices/{deviceId}/telemetry", .prefix = "dev-", .threshold = 30};
	static const struct option longopts[] = {
		{"host", required_argument, NULL, 'H'}, {"port", required_argument, NULL, 'p'},
		{"devices", required_argument, NULL, 'd'}, {"connections", required_argument, NULL, 'c'},
		{"count", required_argument, NULL, 'n'}, {"duration", required_argument, NULL, 't'},
		{"rate", required_argument, NULL, 'r'}, {"qos", required_argument, NULL, 'q'},
		{"window", required_argument, NULL, 'w'}, {"format", required_argument, NULL, 'f'},
		{"bad", required_argument, NULL, 1}, {"dup", required_argument, NULL, 2},
		{"spike", required_argument, NULL, 3}, {"topic", required_argument, NULL, 4},
		{"prefix", required_argument, NULL, 5}, {"registry", required_argument, NULL, 6},
		{"quiet", no_argument, NULL, 7}, {"threshold", required_argument, NULL, 8},
		{"device-rate", required_argument, NULL, 9},
		{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	int ch;
	double device_rate = 0;
	while((ch = getopt_long(argc, argv, "H:p:d:c:n:t:r:q:w:f:h", longopts, NULL)) != -1){
		switch(ch){
		case 'H': o.host = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case 'd': o.devices = atoi(optarg); break;
		case 'c': o.connections = atoi(optarg); break;
		case 'n': o.count = strtoull(optarg, NULL, 10); break;
		case 't': o.duration_s = atof(optarg); break;
		case 'r': o.rate = atof(optarg); break;
		case 'q': o.qos = atoi(optarg); break;
		case 'w': o.window = atoi(optarg); break;
		case 'f':
			if(!strcmp(optarg, "ref")) o.format = FMT_REF;
			else if(!strcmp(optarg, "multi")) o.format = FMT_MULTI;
			else if(!strcmp(optarg, "senml")) o.format = FMT_SENML;
			else{ usage(stderr); return 2; }
			break;
		case 1: o.bad_rate = atof(optarg); break;
		case 2: o.dup_rate = atof(optarg); break;
		case 3: o.spike_rate = atof(optarg); break;
		case 4: o.topic = optarg; break;
		case 5: o.prefix = optarg; break;
		case 6: o.registry = optarg; break;
		case 7: o.quiet = true; break;
		case 8: o.threshold = atof(optarg); break;
		case 9: device_rate = atof(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if(device_rate > 0) o.rate = device_rate * o.devices;
	if(o.connections < 1 || o.devices < o.connections || o.qos < 0 || o.qos > 1 || o.window < 1){
		fprintf(stderr, "iotpipe-sim: need devices >= connections >= 1, qos 0 or 1, window >= 1\n");
		return 2;
	}
	if(o.registry) return write_registry(&o) ? 0 : 1;
	if(!o.count && o.duration_s <= 0) o.duration_s = 10;

	mosquitto_lib_init();
	struct conn *conns = calloc((size_t)o.connections, sizeof(*conns));
	int per = o.devices / o.connections, extra = o.devices % o.connections, first = 0;
	for(int i = 0; i < o.connections; i++){
		struct conn *c = &conns[i];
		c->o = &o;
		c->index = i;
		c->first_dev = first;
		c->ndev = per + (i < extra);
		first += c->ndev;
		c->last_ts = calloc((size_t)c->ndev, sizeof(int64_t));
		c->rng = 0x1234567ull * (uint64_t)(i + 1);
		c->fence_mid = -1;
		if(o.count) c->quota = o.count / (uint64_t)o.connections + ((uint64_t)i < o.count % (uint64_t)o.connections);
	}
	t0_us = now_us();
	double start = mono_s();
	for(int i = 0; i < o.connections; i++) pthread_create(&conns[i].thread, NULL, conn_main, &conns[i]);

	/* progress: one line a second while the connections run */
	uint64_t prev = 0;
	double prev_t = start;
	for(;;){
		bool running = false;
		for(int i = 0; i < o.connections; i++){
			if(!atomic_load(&conns[i].fence_acked)) running = true;
		}
		if(!running) break;
		usleep(200000);
		double t = mono_s();
		if(t - prev_t < 1.0) continue;
		uint64_t sent = 0, acked = 0, failed = 0;
		for(int i = 0; i < o.connections; i++){
			sent += atomic_load(&conns[i].sent);
			acked += atomic_load(&conns[i].acked);
			failed += atomic_load(&conns[i].failed);
		}
		if(!o.quiet){
			fprintf(stderr, "\r[%5.1fs] sent %" PRIu64 "  acked %" PRIu64 "  failed %" PRIu64 "  %.0f msg/s   ",
					t - start, sent, acked, failed, (double)(sent - prev) / (t - prev_t));
		}
		prev = sent;
		prev_t = t;
		if(t - start > (o.duration_s > 0 ? o.duration_s : 1e9) + 180) atomic_store(&stop_all, true);
	}
	for(int i = 0; i < o.connections; i++) pthread_join(conns[i].thread, NULL);
	double secs = mono_s() - start;
	uint64_t sent = 0, acked = 0, failed = 0, bad = 0, dups = 0;
	for(int i = 0; i < o.connections; i++){
		sent += atomic_load(&conns[i].sent);
		acked += atomic_load(&conns[i].acked);
		failed += atomic_load(&conns[i].failed);
		bad += atomic_load(&conns[i].bad);
		dups += atomic_load(&conns[i].dups);
		free(conns[i].last_ts);
	}
	if(!o.quiet) fprintf(stderr, "\n");
	printf("sent=%" PRIu64 " acked=%" PRIu64 " failed=%" PRIu64 " bad=%" PRIu64 " dups=%" PRIu64
			" seconds=%.3f rate=%.0f\n", sent, acked, failed, bad, dups, secs, (double)sent / secs);
	free(conns);
	mosquitto_lib_cleanup();
	return failed ? 1 : 0;
}
