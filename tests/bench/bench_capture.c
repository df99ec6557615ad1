/* The broker main thread's cost per captured message: pipeline_capture (topic match, capture
 * header, journal append) in a loop against a real pipeline, processor and file sink running.
 * Run under callgrind with --toggle-collect=pipeline_capture for instructions per message. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "pipeline.h"

static double clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	char dir[] = "/tmp/iotpipe-bench-capture-XXXXXX";
	if(!mkdtemp(dir)) return 1;
	struct config_kv kv[] = {{"journal_dir", dir}, {"journal_max_bytes", "4G"}, {"metrics_interval", "0"}};
	struct config cfg;
	char err[512];
	if(!config_parse(kv, 3, &cfg, err, sizeof(err))){
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	struct pipeline *p = pipeline_start(&cfg, err, sizeof(err));
	if(!p){
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	char topics[64][64], payloads[64][160];
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	long long ts = (long long)now.tv_sec * 1000;
	uint32_t lens[64];
	for(int i = 0; i < 64; i++){
		snprintf(topics[i], sizeof(topics[i]), "devices/temp-%03d/telemetry", i);
		lens[i] = (uint32_t)snprintf(payloads[i], sizeof(payloads[i]),
				"{\"deviceId\":\"temp-%03d\",\"sensorId\":\"temp\",\"value\":22.5,\"ts\":%lld}", i, ts + i);
	}
	long rejected = 0;
	double t0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	for(long i = 0; i < n; i++){
		int k = (int)(i & 63);
		/* what the plugin's MESSAGE callback does */
		if(!pipeline_captures(p, topics[k])) continue;
		if(pipeline_capture(p, topics[k], "client-1", "user", payloads[k], lens[k], 0, false) != CAPTURE_OK) rejected++;
	}
	/* CPU time is the cost to the broker's thread; wall time also counts the moments the other
	 * pipeline threads had the core (2 cores, 3 busy threads here). */
	double cpu = (clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / (double)n;
	double wall = (clock_ns(CLOCK_MONOTONIC) - t0) / (double)n;
	printf("captures=%ld rejected=%ld cpu_ns_per_capture=%.1f wall_ns_per_capture=%.1f\n", n, rejected, cpu, wall);
	static char stats[8192];
	if(getenv("BENCH_STATS") && pipeline_stats_json(p, stats, sizeof(stats))) printf("%s\n", stats);
	pipeline_stop(p);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 && rejected == 0 ? 0 : 1;
}
