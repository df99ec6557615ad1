/* The processor thread: tails the ingest journal, turns each capture into output records (parse,
 * identify, validate, enrich, detect, aggregate) and appends them to the outbox (DESIGN.md section 1).
 * Its state (series baselines, alert states, open windows) is checkpointed with the ingest LSN it
 * reflects; the ingest cursor moves only with a checkpoint, so a restart replays from there and the
 * regenerated outputs carry the same record ids. */
#ifndef IOTPIPE_PROCESSOR_H
#define IOTPIPE_PROCESSOR_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "journal.h"
#include "metrics.h"
#include "pubq.h"

struct regslot;
struct processor;

struct processor_deps {
	const struct config *cfg;
	struct journal_reader *in;
	struct journal *out;
	struct metrics *m;
	struct pubq *pubq;          /* alerts for MQTT; NULL: none */
	struct regslot *regslot;    /* registry snapshots from the file (regwatch.h) or PostgreSQL (pgreg.h);
	                             * NULL, or before the first snapshot: devices pass unenriched */
	const char *state_path;     /* checkpoint file */
};

/* main thread at start: loads the checkpoint and starts the thread */
struct processor *processor_start(const struct processor_deps *d, char *err, size_t errlen);
/* main thread at stop: finishes the batch at hand, checkpoints, joins */
void processor_stop(struct processor *p);

/* Without a thread, for tests and benchmarks: the same work for one ingest record. */
struct processor *processor_new(const struct processor_deps *d, char *err, size_t errlen);
void processor_handle(struct processor *p, const struct journal_rec *rec);
void processor_free(struct processor *p);
size_t processor_series_bytes(const struct processor *p, size_t *count);

#endif
