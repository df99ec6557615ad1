#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "pubq.h"

struct pubq {
	_Atomic size_t head;        /* next slot to pop; written by the consumer */
	_Atomic size_t tail;        /* next slot to fill; written by the producer */
	_Atomic uint64_t dropped;
	size_t cap;
	struct pubq_msg slots[];
};

struct pubq *pubq_new(size_t capacity)
{
	struct pubq *q = calloc(1, sizeof(*q) + capacity * sizeof(struct pubq_msg));
	if(q) q->cap = capacity;
	return q;
}

void pubq_free(struct pubq *q)
{
	free(q);
}

bool pubq_push(struct pubq *q, const char *topic, const char *payload, size_t len)
{
	size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
	size_t head = atomic_load_explicit(&q->head, memory_order_acquire);
	if(tail - head == q->cap || len > PUBQ_PAYLOAD_MAX || strlen(topic) >= PUBQ_TOPIC_MAX){
		atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
		return false;
	}
	struct pubq_msg *m = &q->slots[tail % q->cap];
	strcpy(m->topic, topic);
	memcpy(m->payload, payload, len);
	m->len = (uint32_t)len;
	atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
	return true;
}

bool pubq_pop(struct pubq *q, struct pubq_msg *out)
{
	size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
	size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
	if(head == tail) return false;
	*out = q->slots[head % q->cap];
	atomic_store_explicit(&q->head, head + 1, memory_order_release);
	return true;
}

uint64_t pubq_dropped(const struct pubq *q)
{
	return atomic_load_explicit(&((struct pubq *)q)->dropped, memory_order_relaxed);
}
