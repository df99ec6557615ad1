/* MQTT topic filters compiled once at start, matched on the broker's main thread for every
 * publish: no allocation, one pass over the topic per filter. */
#ifndef IOTPIPE_TOPIC_H
#define IOTPIPE_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#define TOPIC_MAX_FILTERS 16
#define TOPIC_MAX_LEVELS 16

struct topic_level {
	const char *s;              /* NULL for '+'; points into the filter's copy */
	size_t len;
};

struct topic_filter {
	char *text;
	size_t nlevels;
	bool hash;                  /* ends in '#': matches the parent level and everything below */
	struct topic_level levels[TOPIC_MAX_LEVELS];
};

struct topic_set {
	size_t n;
	struct topic_filter f[TOPIC_MAX_FILTERS];
};

/* main thread at start: space-separated filters; false with err when one is not a valid filter */
bool topic_set_parse(struct topic_set *set, const char *filters, char *err, size_t errlen);
/* main thread: does any filter match this topic? */
bool topic_set_match(const struct topic_set *set, const char *topic);
/* any thread: copy the given level (0-based) of topic into out; false if absent, empty or too long */
bool topic_level(const char *topic, int level, char *out, size_t outlen);
void topic_set_free(struct topic_set *set);

#endif
