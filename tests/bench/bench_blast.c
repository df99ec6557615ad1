/* An MQTT 3.1.1 publisher that costs the machine as little as possible, so that the broker is what a
 * benchmark measures: each connection writes pre-encoded PUBLISH packets in 64 KiB writes.
 * QoS 0: then one QoS 1 PUBLISH as a fence. MQTT keeps a connection's order, so the fence's PUBACK
 * means the broker has handled every message before it: the rate is what the broker absorbed.
 * QoS 1: a second thread per connection reads the PUBACKs, and the clock stops at the last one (TCP's
 * flow control is the only window; the broker acknowledges as it reads).
 *   usage: bench_blast PORT MESSAGES [CONNECTIONS] [DEVICES] [QOS] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
	int port, index, devices, qos, fd;
	long count;
	int ok, acks_ok;
	pthread_t thread, acker;
};

static size_t put_remaining(uint8_t *p, size_t n)
{
	size_t k = 0;
	do{
		uint8_t b = n % 128;
		n /= 128;
		if(n) b |= 0x80;
		p[k++] = b;
	}while(n);
	return k;
}

static size_t publish_packet(uint8_t *out, const char *topic, const char *payload, int qos, uint16_t mid)
{
	size_t tl = strlen(topic), pl = strlen(payload);
	size_t rem = 2 + tl + (qos ? 2 : 0) + pl, k = 0;
	out[k++] = (uint8_t)(0x30 | (qos << 1));
	k += put_remaining(out + k, rem);
	out[k++] = (uint8_t)(tl >> 8);
	out[k++] = (uint8_t)tl;
	memcpy(out + k, topic, tl);
	k += tl;
	if(qos){
		out[k++] = (uint8_t)(mid >> 8);
		out[k++] = (uint8_t)mid;
	}
	memcpy(out + k, payload, pl);
	return k + pl;
}

static bool write_all(int fd, const uint8_t *p, size_t n)
{
	while(n){
		ssize_t w = write(fd, p, n);
		if(w <= 0) return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static bool read_n(int fd, uint8_t *p, size_t n)
{
	while(n){
		ssize_t r = read(fd, p, n);
		if(r <= 0) return false;
		p += r;
		n -= (size_t)r;
	}
	return true;
}

/* QoS 1: every PUBACK of the connection (the writer may still be writing) */
static void *acker_main(void *arg)
{
	struct conn *c = arg;
	static __thread uint8_t buf[1 << 16];
	size_t have = 0;
	long acked = 0;
	while(acked < c->count){
		ssize_t r = read(c->fd, buf + have, sizeof(buf) - have);
		if(r <= 0) return NULL;
		have += (size_t)r;
		size_t k = 0;
		for(; have - k >= 4; k += 4){
			if(buf[k] != 0x40 || buf[k + 1] != 2) return NULL;
			acked++;
		}
		memmove(buf, buf + k, have - k);
		have -= k;
	}
	c->acks_ok = 1;
	return NULL;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if(connect(fd, (struct sockaddr *)&a, sizeof(a))) return NULL;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	char cid[32];
	int cl = snprintf(cid, sizeof(cid), "blast-%d-%d", (int)getpid(), c->index);
	uint8_t pkt[512];
	size_t k = 0;
	pkt[k++] = 0x10;
	k += put_remaining(pkt + k, (size_t)(10 + 2 + cl));
	static const uint8_t vh[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60};
	memcpy(pkt + k, vh, sizeof(vh));
	k += sizeof(vh);
	pkt[k++] = 0;
	pkt[k++] = (uint8_t)cl;
	memcpy(pkt + k, cid, (size_t)cl);
	k += (size_t)cl;
	uint8_t ack[4];
	if(!write_all(fd, pkt, k) || !read_n(fd, ack, 4) || ack[0] != 0x20 || ack[3] != 0) return NULL;
	c->fd = fd;
	if(c->qos && pthread_create(&c->acker, NULL, acker_main, c)) return NULL;

	static __thread uint8_t buf[1 << 16];
	size_t used = 0;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	long long ts = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	for(long i = 0; i < c->count; i++){
		char topic[64], payload[160];
		int dev = c->index + (int)(i % (c->devices > 0 ? c->devices : 1)) * 1000;
		snprintf(topic, sizeof(topic), "devices/dev-%06d/telemetry", dev);
		snprintf(payload, sizeof(payload), "{\"deviceId\":\"dev-%06d\",\"sensorId\":\"temp\",\"value\":%.2f,\"ts\":%lld}",
				dev, 20.0 + (double)(i % 100) / 10.0, ts + i);
		if(used + 256 > sizeof(buf)){
			if(!write_all(fd, buf, used)) return NULL;
			used = 0;
		}
		used += publish_packet(buf + used, topic, payload, c->qos, (uint16_t)(i % 65535 + 1));
	}
	if(c->qos){
		if(!write_all(fd, buf, used)) return NULL;
		pthread_join(c->acker, NULL);
		if(!c->acks_ok) return NULL;
	}else{
		used += publish_packet(buf + used, "bench/fence", "", 1, 1);
		if(!write_all(fd, buf, used) || !read_n(fd, ack, 4) || ack[0] != 0x40) return NULL;
	}
	static const uint8_t disc[] = {0xE0, 0};
	write_all(fd, disc, 2);
	close(fd);
	c->ok = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	if(argc < 3){
		fprintf(stderr, "usage: bench_blast PORT MESSAGES [CONNECTIONS] [DEVICES] [QOS]\n");
		return 2;
	}
	int port = atoi(argv[1]), nconn = argc > 3 ? atoi(argv[3]) : 2, devices = argc > 4 ? atoi(argv[4]) : 1000;
	int qos = argc > 5 ? atoi(argv[5]) : 0;
	long total = atol(argv[2]);
	struct conn *c = calloc((size_t)nconn, sizeof(*c));
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for(int i = 0; i < nconn; i++){
		c[i] = (struct conn){.port = port, .index = i, .count = total / nconn, .devices = devices / nconn, .qos = qos};
		pthread_create(&c[i].thread, NULL, conn_main, &c[i]);
	}
	int ok = 1;
	for(int i = 0; i < nconn; i++){
		pthread_join(c[i].thread, NULL);
		ok &= c[i].ok;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	long sent = (total / nconn) * nconn;
	printf("sent=%ld seconds=%.3f rate=%.0f%s\n", sent, s, (double)sent / s, ok ? "" : " FAILED");
	free(c);
	return ok ? 0 : 1;
}
