/* The file sink: NDJSON files per output kind (enriched.ndjson, alert.ndjson, ...) under
 * file_sink_dir, rotated by size. It is an outbox reader like any other sink, with its own cursor:
 * the embedded default when neither Kafka nor PostgreSQL is configured. */
#ifndef IOTPIPE_FILE_SINK_H
#define IOTPIPE_FILE_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "metrics.h"

struct file_sink;

/* main thread at start: opens the files and starts the sink thread */
struct file_sink *file_sink_start(const char *dir, uint64_t max_bytes, struct journal_reader *reader,
		struct metrics *m, char *err, size_t errlen);
/* main thread at stop: writes what it has read, syncs, persists its cursor, joins */
void file_sink_stop(struct file_sink *s);

#endif
