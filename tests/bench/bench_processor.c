/* The processor's cost per reading for the reference message: captures for 1,000 devices
 * (or argv[3]) journaled first, then processor_handle (parse, identify, validate, enrich, detect, window, encode,
 * append to the outbox) runs over them on this thread. Under callgrind, --toggle-collect on
 * processor_handle and on payload_parse gives instructions per reading and per parse. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "journal.h"
#include "processor.h"
#include "record.h"
#include "regwatch.h"

static double clock_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	const char *registry = argc > 2 && *argv[2] ? argv[2] : NULL;   /* iotpipe-sim --devices N --registry FILE */
	int devices = argc > 3 ? atoi(argv[3]) : 1000;
	if(devices < 1) devices = 1;
	char dir[] = "/tmp/iotpipe-bench-proc-XXXXXX", path[128], err[512];
	if(!mkdtemp(dir)) return 1;
	struct config_kv kv[] = {{"journal_dir", dir}, {"registry_file", registry}};
	struct config cfg;
	if(!config_parse(kv, registry ? 2 : 1, &cfg, err, sizeof(err))){
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/ingest", dir);
	struct journal_opts o = {.dir = path, .max_bytes = 8ull << 30, .readers = {"processor", NULL}};
	struct journal *in = journal_open(&o, err, sizeof(err));
	snprintf(path, sizeof(path), "%s/outbox", dir);
	o.dir = path;
	o.readers[0] = NULL;
	struct journal *out = journal_open(&o, err, sizeof(err));
	struct regwatch *reg = registry ? regwatch_start(registry, 1000, err, sizeof(err)) : NULL;
	if(!in || !out || (registry && !reg)){
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	struct metrics m = {0};
	struct processor_deps d = {.cfg = &cfg, .in = journal_reader(in, "processor"), .out = out, .m = &m,
		.regslot = reg ? regwatch_slot(reg) : NULL};
	struct processor *p = processor_new(&d, err, sizeof(err));

	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	long long t0 = (long long)now.tv_sec * 1000 - n;   /* readings 1 ms apart, ending now */
	for(long i = 0; i < n; i++){
		char topic[64], payload[160];
		int dev = (int)(i % devices);
		snprintf(topic, sizeof(topic), "devices/dev-%06d/telemetry", dev);
		int len = snprintf(payload, sizeof(payload), "{\"deviceId\":\"dev-%06d\",\"sensorId\":\"temp\",\"value\":%.2f,\"ts\":%lld}",
				dev, 20.0 + (double)(i % 50) / 10.0, t0 + i);
		struct capture_hdr h;
		struct iovec iov[5];
		int k = capture_iov(&h, iov, topic, "client-1", "", payload, (uint32_t)len, 65536, 1, false, t0 + n);
		if(journal_append(in, REC_CAPTURE, iov, k, NULL) != JOURNAL_OK) return 1;
	}
	struct journal_reader *r = journal_reader(in, "processor");
	struct journal_rec rec;
	double c0 = clock_ns();
	long done = 0;
	while(journal_next(r, &rec)){
		processor_handle(p, &rec);
		done++;
	}
	double ns = (clock_ns() - c0) / (double)done;
	printf("readings=%ld enriched=%" PRIu64 " quarantined=%" PRIu64 " cpu_ns_per_reading=%.1f\n", done,
			METRIC_GET(&m, readings), METRIC_GET(&m, quarantined), ns);
	size_t count, bytes = processor_series_bytes(p, &count);
	printf("series=%zu bytes_per_series=%.1f\n", count, count ? (double)bytes / (double)count : 0.0);
	processor_free(p);
	if(reg) regwatch_stop(reg);
	journal_close(out);
	journal_close(in);
	config_free(&cfg);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	return system(path);
}
