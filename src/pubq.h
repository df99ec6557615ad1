/* MQTT messages the processor wants published (alerts). Mosquitto's API is main-thread only, so the
 * processor pushes here and the plugin pops and publishes on MOSQ_EVT_TICK. One producer, one
 * consumer, no locks; a full queue drops the message and counts it (the alert is in the outbox anyway). */
#ifndef IOTPIPE_PUBQ_H
#define IOTPIPE_PUBQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PUBQ_TOPIC_MAX 256
#define PUBQ_PAYLOAD_MAX 1024

struct pubq_msg {
	char topic[PUBQ_TOPIC_MAX];
	uint32_t len;
	char payload[PUBQ_PAYLOAD_MAX];
};

struct pubq;

struct pubq *pubq_new(size_t capacity);
void pubq_free(struct pubq *q);
/* processor thread */
bool pubq_push(struct pubq *q, const char *topic, const char *payload, size_t len);
/* main thread */
bool pubq_pop(struct pubq *q, struct pubq_msg *out);
/* any thread */
uint64_t pubq_dropped(const struct pubq *q);

#endif
