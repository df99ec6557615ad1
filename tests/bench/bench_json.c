/* The JSON of an enriched record, as the Kafka sink makes it: outrec_json with a generator that keeps
 * series JSON (record.c), readings of SERIES series taken in turn, which is the worst order for what
 * it keeps; with "nokeep" a generator that keeps none, as the file sink's.
 *   bench_json N SERIES [nokeep]
 * Run under callgrind with --toggle-collect=outrec_json for instructions per record. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_reading.h"

int main(int argc, char **argv)
{
	if(argc < 3){
		fprintf(stderr, "usage: bench_json N SERIES [nokeep]\n");
		return 2;
	}
	long n = atol(argv[1]), series = atol(argv[2]);
	bool keep = !(argc > 3 && !strcmp(argv[3], "nokeep"));
	if(n <= 0 || series <= 0) return 2;
	char (*dev)[24] = malloc((size_t)series * sizeof(*dev));
	struct outrec_json *j = outrec_json_new(keep);
	if(!dev || !j) return 1;
	for(long i = 0; i < series; i++) snprintf(dev[i], sizeof(dev[i]), "dev-%06ld", i);
	char buf[4096];
	size_t bytes = 0;
	struct timespec a, b;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
	for(long i = 0; i < n; i++){
		struct outrec r = bench_reading((uint64_t)i, dev[i % series]);
		bytes += outrec_json(j, &r, buf, sizeof(buf));
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
	double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
	printf("records=%ld series=%ld cpu_ns_per_record=%.0f bytes_per_record=%.0f\n", n, series, ns / (double)n,
			(double)bytes / (double)n);
	outrec_json_free(j);
	free(dev);
	return 0;
}
