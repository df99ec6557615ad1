/* The Kafka sink: an outbox reader that produces every output record to Kafka with librdkafka
 * (key = deviceId, the record id in a header), moving its cursor on delivery reports only. */
#ifndef IOTPIPE_KAFKA_SINK_H
#define IOTPIPE_KAFKA_SINK_H

#include <stddef.h>

#include "config.h"
#include "journal.h"
#include "metrics.h"

struct kafka_sink;

/* main thread at start: builds the producer from cfg (kafka_brokers, kafka_topic_*, every kafka.<property>;
 * a property librdkafka refuses is an error naming it) and starts the sink thread */
struct kafka_sink *kafka_sink_start(const struct config *cfg, struct journal_reader *reader, struct metrics *m,
		char *err, size_t errlen);
/* main thread at stop: flushes for a bounded time, persists the cursor; the rest stays in the outbox */
void kafka_sink_stop(struct kafka_sink *s);

#endif
