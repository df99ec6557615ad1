/* Counters every thread bumps with relaxed atomics, read by the $SYS publisher and the tools. They
 * make the loss ledger visible: received = journaled + rejected, and every journaled capture ends as
 * readings delivered, quarantined, or pending in a journal (DESIGN.md section 4). */
#ifndef IOTPIPE_METRICS_H
#define IOTPIPE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "reason.h"

struct metrics {
	/* written by the main thread only */
	_Atomic uint64_t received;          /* publishes on captured topics */
	_Atomic uint64_t journaled;
	_Atomic uint64_t rejected_full;     /* journal_full reject */
	_Atomic uint64_t rejected_error;    /* journal I/O error */
	/* written by the pipeline threads */
	_Atomic uint64_t processed;         /* captures the processor finished */
	_Atomic uint64_t readings;          /* readings accepted (enriched records) */
	_Atomic uint64_t quarantined;
	_Atomic uint64_t quarantine_reason[IP_R__COUNT];
	_Atomic uint64_t alerts;
	_Atomic uint64_t aggregates;
	_Atomic uint64_t late;
	_Atomic uint64_t raw;
	_Atomic uint64_t outbox_waits;      /* processor waited for outbox space */
	_Atomic uint64_t mqtt_published;    /* alerts published on MQTT */
	_Atomic uint64_t file_written;      /* records the file sink wrote */
	_Atomic uint64_t kafka_delivered;   /* records Kafka acknowledged */
	_Atomic uint64_t kafka_rejected;    /* records Kafka refused for good (sent to the quarantine topic) */
	_Atomic uint64_t kafka_retries;     /* transient delivery failures, retried */
	_Atomic uint64_t pg_written;        /* rows committed (duplicates absorbed by ON CONFLICT included) */
	_Atomic uint64_t pg_rejected;       /* rows PostgreSQL refused for their data (in its quarantine table) */
	_Atomic uint64_t pg_retries;        /* connection or transaction failures, retried */
};

#define METRIC_ADD(m, field, n) atomic_fetch_add_explicit(&(m)->field, (n), memory_order_relaxed)
#define METRIC_GET(m, field) atomic_load_explicit(&(m)->field, memory_order_relaxed)
/* For counters with a single writing thread: a plain load and store, no locked instruction. */
#define METRIC_INC_OWN(m, field) atomic_store_explicit(&(m)->field, METRIC_GET(m, field) + 1, memory_order_relaxed)

#endif
