/* The whole pipeline behind one handle: the journals, the processor, the registry loader and the
 * sinks, started and stopped in order. The plugin glue talks to nothing else. */
#ifndef IOTPIPE_PIPELINE_H
#define IOTPIPE_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "pubq.h"

enum capture_rc {
	CAPTURE_OK,                 /* in the ingest journal */
	CAPTURE_REJECTED,           /* journal full (reject) or broken: refuse the publish */
};

struct pipeline;

/* main thread at start; takes ownership of *cfg (cleared) whatever the outcome */
struct pipeline *pipeline_start(struct config *cfg, char *err, size_t errlen);
/* main thread: does this topic enter the pipeline? */
bool pipeline_captures(const struct pipeline *p, const char *topic);
/* main thread: the MESSAGE hot path for a captured topic, a memcpy into the ingest journal */
enum capture_rc pipeline_capture(struct pipeline *p, const char *topic, const char *client_id,
		const char *username, const void *payload, uint32_t len, uint8_t qos, bool retain);
/* main thread (SIGHUP): re-read the registry */
void pipeline_reload(struct pipeline *p);
/* main thread: MQTT messages waiting to be published */
struct pubq *pipeline_pubq(struct pipeline *p);
const struct config *pipeline_config(const struct pipeline *p);
struct metrics *pipeline_metrics(struct pipeline *p);
/* any thread: the counters and journal state as one JSON object; returns its length or 0 */
size_t pipeline_stats_json(struct pipeline *p, char *buf, size_t cap);
/* main thread at stop: stops every thread in order and persists every cursor */
void pipeline_stop(struct pipeline *p);

#endif
