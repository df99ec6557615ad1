/* The enriched record the Kafka benchmarks send (bench_kafka_raw, bench_json): reading i of device
 * dev, sensor "temp", its value what strtod makes of a reading sent with two decimals ("29.99"), as
 * devices send them, with the registry's strings and a threshold. */
#ifndef IOTPIPE_BENCH_READING_H
#define IOTPIPE_BENCH_READING_H

#include <stdint.h>

#include "record.h"

static inline struct outrec bench_reading(uint64_t i, const char *dev)
{
	int64_t ts = 1700000000000 + (int64_t)i;
	return (struct outrec){.kind = REC_ENRICHED, .id = record_id_reading(dev, "temp", ts), .ts_ms = ts,
		.arrival_ms = ts, .device_id = dev, .sensor_id = "temp", .unit = "Cel",
		.value = (2000.0 + (double)(i % 1000)) / 100.0, .location = "site-7", .zone = "z3",
		.device_type = "thermo-hygrometer", .limit = 30, .flags = OUT_HAS_THRESHOLD, .score = 0.25};
}

#endif
