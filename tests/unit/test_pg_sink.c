/* The PostgreSQL sink. Pure parts first (binary COPY tuples of each kind, rejected rows, bisect,
 * cursor contiguity), then the sink itself against a live PostgreSQL 15: one started with
 * ci/pg.sh for this run when running as root with PostgreSQL installed, or the one in
 * IOTPIPE_TEST_PG (a libpq conninfo of a superuser); skipped otherwise. Each live test works in a
 * database of its own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "config.h"
#include "journal.h"
#include "log.h"
#include "pg_copy.h"
#include "pg_schema.h"
#include "pg_sink.h"
#include "record.h"

#include "pg_live.h"
#include "wait.h"

#define DEADLINE_MS 30000
#define JAN5_MS 1704412800000LL   /* 2024-01-05T00:00:00Z */

static uint64_t be64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return be64toh(v);
}

static uint32_t be32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be32toh(v);
}

static double f8(const uint8_t *p)
{
	uint64_t bits = be64(p);
	double d;
	memcpy(&d, &bits, sizeof(d));
	return d;
}

/* field col of the only tuple in t: its bytes, or NULL when NULL */
static const uint8_t *field(const struct pg_tuples *t, size_t row, size_t col, size_t *n)
{
	size_t len;
	const uint8_t *tup = pg_tuples_span(t, row, row + 1, &len);
	const uint8_t *v;
	if(!pg_tuple_field(tup, len, col, &v, n)) return NULL;
	return v;
}

static void assert_text(const struct pg_tuples *t, size_t row, const char *col_name, enum pg_table_id tab, const char *want)
{
	size_t n;
	int c = pg_table_column(tab, col_name);
	assert_true(c >= 0);
	const uint8_t *v = field(t, row, (size_t)c, &n);
	if(!want){
		assert_null(v);
		return;
	}
	assert_non_null(v);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(v, want, n);
}

static const uint8_t *col(const struct pg_tuples *t, enum pg_table_id tab, const char *name, size_t want_len)
{
	size_t n;
	int c = pg_table_column(tab, name);
	assert_true(c >= 0);
	const uint8_t *v = field(t, 0, (size_t)c, &n);
	if(v) assert_int_equal(n, want_len);
	return v;
}

/* --- pure --------------------------------------------------------------------------------------- */

static void test_time(void **state)
{
	(void)state;
	assert_int_equal(pg_time_from_ms(946684800000LL), 0);
	assert_int_equal(pg_time_from_ms(0), -946684800000000LL);
	assert_int_equal(pg_time_from_ms(JAN5_MS + 1), (JAN5_MS + 1 - 946684800000LL) * 1000);
	assert_int_equal(pg_time_to_ms(pg_time_from_ms(JAN5_MS + 123)), JAN5_MS + 123);
	assert_int_equal(pg_time_to_ms(-1), 946684799999LL);
	/* far out of range: a value the server refuses, not a wrapped one */
	assert_int_equal(pg_time_from_ms(INT64_MAX), INT64_MAX - 1);
	assert_int_equal(pg_time_from_ms(INT64_MIN), INT64_MAX - 1);
	assert_int_equal(pg_table_of_kind(REC_ENRICHED), PG_T_METRICS);
	assert_int_equal(pg_table_of_kind(REC_ALERT), PG_T_ALERTS);
	assert_int_equal(pg_table_of_kind(REC_QUARANTINE), PG_T_QUARANTINE);
	assert_int_equal(pg_table_of_kind(REC_AGGREGATE), PG_T_AGG);
	assert_int_equal(pg_table_of_kind(REC_RAW), -1);
	assert_memory_equal(pg_copy_header, "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", PG_COPY_HEADER_LEN);
}

static void test_encode_metrics(void **state)
{
	(void)state;
	struct pg_tuples t;
	pg_tuples_init(&t);
	struct outrec r = {
		.kind = REC_ENRICHED, .id = 0xfedcba9876543210ULL, .ts_ms = JAN5_MS + 1500, .arrival_ms = JAN5_MS + 1600,
		.device_id = "temp-007", .sensor_id = "temp", .unit = "Cel", .location = "Berlin", .zone = "z1",
		.device_type = "thermometer", .value = 22.5, .limit = 25, .score = NAN,
		.flags = OUT_HAS_THRESHOLD | OUT_ANOMALY | OUT_LATE,
	};
	assert_true(pg_tuples_add(&t, &r, 42));
	assert_int_equal(t.n, 1);
	assert_int_equal(t.lsn[0], 42);
	/* the exact bytes of the start: field count, then length-prefixed fields */
	assert_memory_equal(t.buf, "\x00\x10" "\x00\x00\x00\x08" "temp-007" "\x00\x00\x00\x04" "temp", 2 + 12 + 8);
	assert_int_equal((int64_t)be64(col(&t, PG_T_METRICS, "ts", 8)), (JAN5_MS + 1500 - 946684800000LL) * 1000);
	assert_true(f8(col(&t, PG_T_METRICS, "value", 8)) == 22.5);
	assert_text(&t, 0, "unit", PG_T_METRICS, "Cel");
	assert_text(&t, 0, "location", PG_T_METRICS, "Berlin");
	assert_text(&t, 0, "zone", PG_T_METRICS, "z1");
	assert_text(&t, 0, "device_type", PG_T_METRICS, "thermometer");
	assert_true(f8(col(&t, PG_T_METRICS, "threshold", 8)) == 25);
	assert_int_equal(col(&t, PG_T_METRICS, "is_anomaly", 1)[0], 1);
	assert_null(col(&t, PG_T_METRICS, "zscore", 8));   /* NaN: no z-score yet */
	assert_int_equal(col(&t, PG_T_METRICS, "ts_missing", 1)[0], 0);
	assert_int_equal(col(&t, PG_T_METRICS, "late", 1)[0], 1);
	assert_int_equal(col(&t, PG_T_METRICS, "unenriched", 1)[0], 0);
	assert_int_equal(be64(col(&t, PG_T_METRICS, "id", 8)), 0xfedcba9876543210ULL);
	assert_int_equal((int64_t)be64(col(&t, PG_T_METRICS, "arrival", 8)), (JAN5_MS + 1600 - 946684800000LL) * 1000);

	/* an unenriched reading: NULLs where the registry had nothing */
	struct outrec u = {
		.kind = REC_ENRICHED, .id = 1, .ts_ms = JAN5_MS, .arrival_ms = JAN5_MS, .device_id = "d", .sensor_id = "value",
		.value = -1.25, .score = 1.5, .limit = NAN, .flags = OUT_UNENRICHED | OUT_TS_MISSING,
	};
	pg_tuples_reset(&t);
	assert_true(pg_tuples_add(&t, &u, 7));
	assert_text(&t, 0, "unit", PG_T_METRICS, NULL);
	assert_text(&t, 0, "location", PG_T_METRICS, NULL);
	assert_null(col(&t, PG_T_METRICS, "threshold", 8));
	assert_true(f8(col(&t, PG_T_METRICS, "zscore", 8)) == 1.5);
	assert_int_equal(col(&t, PG_T_METRICS, "ts_missing", 1)[0], 1);
	assert_int_equal(col(&t, PG_T_METRICS, "unenriched", 1)[0], 1);
	/* every field walked: the tuple is exactly as long as its fields */
	size_t len, off = 2;
	const uint8_t *tup = pg_tuples_span(&t, 0, 1, &len);
	for(size_t i = 0; i < pg_tables[PG_T_METRICS].ncols; i++){
		int32_t n = (int32_t)be32(tup + off);
		off += 4 + (n > 0 ? (size_t)n : 0);
	}
	assert_int_equal(off, len);
	pg_tuples_free(&t);
}

static void test_encode_other_kinds(void **state)
{
	(void)state;
	struct pg_tuples t;
	pg_tuples_init(&t);
	struct outrec a = {
		.kind = REC_ALERT, .id = 5, .ts_ms = JAN5_MS, .device_id = "d1", .sensor_id = "temp", .value = 31,
		.limit = 30, .score = NAN, .alert_kind = OUT_ALERT_THRESHOLD, .alert_state = OUT_ALERT_RESOLVED,
		.unit = "Cel", .zone = "z1",
	};
	assert_true(pg_tuples_add(&t, &a, 1));
	assert_int_equal(be64(col(&t, PG_T_ALERTS, "id", 8)), 5);
	assert_text(&t, 0, "kind", PG_T_ALERTS, "threshold");
	assert_text(&t, 0, "state", PG_T_ALERTS, "resolved");
	assert_true(f8(col(&t, PG_T_ALERTS, "limit_value", 8)) == 30);
	assert_null(col(&t, PG_T_ALERTS, "score", 8));
	assert_text(&t, 0, "location", PG_T_ALERTS, NULL);

	pg_tuples_reset(&t);
	static const uint8_t payload[] = {'{', 0xff, 0x00, '}'};
	struct outrec q = {
		.kind = REC_QUARANTINE, .id = 6, .reason = 1, .detail = "not JSON", .topic = "devices/d1/telemetry",
		.client_id = "c1", .username = "", .qos = 1, .payload = payload, .payload_len = sizeof(payload),
		.arrival_ms = JAN5_MS, .ts_ms = JAN5_MS, .flags = OUT_TRUNCATED, .orig_payload_len = 70000,
	};
	assert_true(pg_tuples_add(&t, &q, 2));
	assert_text(&t, 0, "reason", PG_T_QUARANTINE, "malformed_payload");
	assert_text(&t, 0, "detail", PG_T_QUARANTINE, "not JSON");
	assert_text(&t, 0, "device_id", PG_T_QUARANTINE, NULL);
	assert_text(&t, 0, "username", PG_T_QUARANTINE, "");
	assert_int_equal(col(&t, PG_T_QUARANTINE, "qos", 2)[1], 1);
	assert_memory_equal(col(&t, PG_T_QUARANTINE, "payload", sizeof(payload)), payload, sizeof(payload));
	assert_int_equal(be32(col(&t, PG_T_QUARANTINE, "payload_bytes", 4)), 70000);
	assert_int_equal(col(&t, PG_T_QUARANTINE, "truncated", 1)[0], 1);

	pg_tuples_reset(&t);
	struct outrec g = {
		.kind = REC_AGGREGATE, .id = 9, .device_id = "d1", .sensor_id = "temp", .ts_ms = JAN5_MS,
		.win_end_ms = JAN5_MS + 300000, .first_ts_ms = JAN5_MS + 10, .last_ts_ms = JAN5_MS + 290000, .count = 4,
		.sum = 10, .min = 1, .max = 4, .unit = "Cel",
	};
	assert_true(pg_tuples_add(&t, &g, 3));
	assert_int_equal(be64(col(&t, PG_T_AGG, "count", 8)), 4);
	assert_true(f8(col(&t, PG_T_AGG, "avg", 8)) == 2.5);
	assert_true(f8(col(&t, PG_T_AGG, "sum", 8)) == 10);
	assert_int_equal((int64_t)be64(col(&t, PG_T_AGG, "window_end", 8)), (JAN5_MS + 300000 - 946684800000LL) * 1000);
	assert_int_equal((int64_t)be64(col(&t, PG_T_AGG, "last_ts", 8)), (JAN5_MS + 290000 - 946684800000LL) * 1000);

	/* raw records have no table */
	struct outrec raw = {.kind = REC_RAW};
	assert_false(pg_tuples_add(&t, &raw, 4));
	assert_int_equal(t.n, 1);
	pg_tuples_free(&t);
}

static void test_tuples_span(void **state)
{
	(void)state;
	struct pg_tuples t;
	pg_tuples_init(&t);
	size_t total = 0;
	for(int i = 0; i < 3000; i++){   /* past the first growth of both arrays */
		char dev[16];
		snprintf(dev, sizeof(dev), "d%d", i);
		struct outrec r = {.kind = REC_ENRICHED, .device_id = dev, .sensor_id = "s", .ts_ms = JAN5_MS + i, .value = i};
		assert_true(pg_tuples_add(&t, &r, (uint64_t)i + 100));
	}
	size_t len;
	const uint8_t *p = pg_tuples_span(&t, 0, 3000, &len);
	assert_ptr_equal(p, t.buf);
	assert_int_equal(len, t.len);
	for(size_t i = 0; i < 3000; i++){
		pg_tuples_span(&t, i, i + 1, &len);
		total += len;
	}
	assert_int_equal(total, t.len);
	p = pg_tuples_span(&t, 10, 20, &len);
	assert_ptr_equal(p, t.buf + t.off[10]);
	assert_int_equal(len, t.off[20] - t.off[10]);
	assert_int_equal(t.lsn[2999], 3099);
	pg_tuples_span(&t, 5, 5, &len);
	assert_int_equal(len, 0);
	pg_tuples_free(&t);
}

static void test_tuple_json(void **state)
{
	(void)state;
	struct pg_tuples t;
	pg_tuples_init(&t);
	struct outrec r = {
		.kind = REC_ENRICHED, .id = 0x1f, .ts_ms = JAN5_MS + 1500, .arrival_ms = JAN5_MS + 1600, .device_id = "d\"1",
		.sensor_id = "temp", .value = 1e7, .score = NAN, .limit = NAN,
	};
	assert_true(pg_tuples_add(&t, &r, 1));
	char out[1024];
	size_t len;
	const uint8_t *tup = pg_tuples_span(&t, 0, 1, &len);
	size_t n = pg_tuple_json(PG_T_METRICS, tup, len, out, sizeof(out));
	assert_int_equal(n, strlen(out));
	assert_string_equal(out, "{\"device_id\":\"d\\\"1\",\"sensor_id\":\"temp\",\"ts\":\"2024-01-05T00:00:01.500Z\","
			"\"value\":10000000,\"unit\":null,\"location\":null,\"zone\":null,\"device_type\":null,\"threshold\":null,"
			"\"is_anomaly\":false,\"zscore\":null,\"ts_missing\":false,\"late\":false,\"unenriched\":false,"
			"\"id\":\"000000000000001f\",\"arrival\":\"2024-01-05T00:00:01.600Z\"}");
	assert_int_equal(pg_tuple_json(PG_T_METRICS, tup, len, out, 20), 0);
	assert_int_equal(pg_tuple_json(PG_T_ALERTS, tup, len, out, sizeof(out)), 0);   /* not its table */
	pg_tuples_free(&t);
}

static void test_reject_row(void **state)
{
	(void)state;
	struct pg_tuples t, q;
	pg_tuples_init(&t);
	pg_tuples_init(&q);
	struct outrec r = {
		.kind = REC_ENRICHED, .id = 0xabc, .ts_ms = JAN5_MS, .arrival_ms = JAN5_MS + 5, .device_id = "d1",
		.sensor_id = "temp", .value = 5e6, .score = NAN,
	};
	assert_true(pg_tuples_add(&t, &r, 77));
	size_t len;
	const uint8_t *tup = pg_tuples_span(&t, 0, 1, &len);
	assert_true(pg_tuples_add_reject(&q, PG_T_METRICS, tup, len, 77,
			"new row for relation \"metrics_p20240105\" violates check constraint \"v\"\xff", JAN5_MS + 9000, false));
	assert_int_equal(q.n, 1);
	assert_int_equal(be64(col(&q, PG_T_QUARANTINE, "id", 8)), record_id_lsn(REC_QUARANTINE, 0xabc, UINT32_MAX));
	assert_text(&q, 0, "reason", PG_T_QUARANTINE, "sink_rejected");
	assert_text(&q, 0, "detail", PG_T_QUARANTINE, "postgresql: new row for relation \"metrics_p20240105\" violates "
			"check constraint \"v\"? (metrics row 0000000000000abc, outbox LSN 77)");
	assert_text(&q, 0, "device_id", PG_T_QUARANTINE, "d1");
	assert_text(&q, 0, "sensor_id", PG_T_QUARANTINE, "temp");
	assert_text(&q, 0, "topic", PG_T_QUARANTINE, NULL);
	size_t n;
	int pc = pg_table_column(PG_T_QUARANTINE, "payload");
	const uint8_t *p = field(&q, 0, (size_t)pc, &n);
	assert_non_null(p);
	assert_true(n > 20 && !memcmp(p, "{\"device_id\":\"d1\"", 17));
	assert_int_equal(be32(col(&q, PG_T_QUARANTINE, "payload_bytes", 4)), n);
	assert_int_equal((int64_t)be64(col(&q, PG_T_QUARANTINE, "arrival", 8)), (JAN5_MS + 5 - 946684800000LL) * 1000);

	/* minimal: nothing of the row but the payload, arrival now */
	pg_tuples_reset(&q);
	assert_true(pg_tuples_add_reject(&q, PG_T_METRICS, tup, len, 77, "why", JAN5_MS + 9000, true));
	assert_text(&q, 0, "device_id", PG_T_QUARANTINE, NULL);
	assert_text(&q, 0, "sensor_id", PG_T_QUARANTINE, NULL);
	assert_int_equal((int64_t)be64(col(&q, PG_T_QUARANTINE, "arrival", 8)), (JAN5_MS + 9000 - 946684800000LL) * 1000);

	/* a refused quarantine row keeps its own payload and identity */
	pg_tuples_reset(&t);
	pg_tuples_reset(&q);
	struct outrec qr = {
		.kind = REC_QUARANTINE, .id = 0x55, .reason = 8, .topic = "devices/x/telemetry", .client_id = "c", .username = "u",
		.payload = (const uint8_t *)"abc", .payload_len = 3, .arrival_ms = JAN5_MS,
	};
	assert_true(pg_tuples_add(&t, &qr, 3));
	tup = pg_tuples_span(&t, 0, 1, &len);
	assert_true(pg_tuples_add_reject(&q, PG_T_QUARANTINE, tup, len, 3, "nope", JAN5_MS, false));
	assert_text(&q, 0, "topic", PG_T_QUARANTINE, "devices/x/telemetry");
	assert_text(&q, 0, "client_id", PG_T_QUARANTINE, "c");
	assert_memory_equal(col(&q, PG_T_QUARANTINE, "payload", 3), "abc", 3);
	assert_int_equal(be64(col(&q, PG_T_QUARANTINE, "id", 8)), record_id_lsn(REC_QUARANTINE, 0x55, UINT32_MAX));
	pg_tuples_free(&t);
	pg_tuples_free(&q);
}

/* A fake server: a range fails when it holds a bad row. Returns the attempts bisect needed. */
static int bisect_run(size_t n, const bool *bad, bool *found)
{
	struct pg_bisect b;
	pg_bisect_init(&b, 0, n);
	int attempts = 0;
	size_t lo, hi;
	memset(found, 0, n);
	while(pg_bisect_next(&b, &lo, &hi)){
		assert_true(lo < hi && hi <= n);
		assert_true(pg_bisect_pending(&b) <= PG_BISECT_DEPTH);
		bool ok = true;
		for(size_t i = lo; i < hi; i++) if(bad[i]) ok = false;
		attempts++;
		size_t row;
		if(pg_bisect_result(&b, ok, &row)){
			assert_true(bad[row]);
			assert_false(found[row]);
			found[row] = true;
		}
	}
	return attempts;
}

static void test_bisect(void **state)
{
	(void)state;
	enum { N = 5000 };
	static bool bad[N], found[N];
	/* no bad row: one attempt */
	memset(bad, 0, sizeof(bad));
	assert_int_equal(bisect_run(N, bad, found), 1);
	/* the first, the last, one in the middle */
	size_t where[] = {0, N - 1, 2500};
	for(size_t k = 0; k < 3; k++){
		memset(bad, 0, sizeof(bad));
		bad[where[k]] = true;
		int attempts = bisect_run(N, bad, found);
		assert_memory_equal(found, bad, N);
		assert_true(attempts <= 2 * 13 + 1);   /* 2 log2(5000) + 1 */
	}
	/* a few spread out, and a random scatter */
	uint64_t rng = 12345;
	for(int round = 0; round < 20; round++){
		memset(bad, 0, sizeof(bad));
		int k = 1 + round % 7;
		for(int i = 0; i < k; i++){
			rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
			bad[(rng >> 33) % N] = true;
		}
		int nbad = 0;
		for(int i = 0; i < N; i++) nbad += bad[i];
		int attempts = bisect_run(N, bad, found);
		assert_memory_equal(found, bad, N);
		assert_true(attempts <= nbad * 2 * 13 + 1);
	}
	/* every row bad: each found once, 2n - 1 attempts */
	memset(bad, 1, 64);
	assert_int_equal(bisect_run(64, bad, found), 127);
	assert_memory_equal(found, bad, 64);
	/* a single row */
	bad[0] = true;
	assert_int_equal(bisect_run(1, bad, found), 1);
	assert_true(found[0]);
	/* nothing to do */
	struct pg_bisect b;
	size_t lo, hi;
	pg_bisect_init(&b, 3, 3);
	assert_false(pg_bisect_next(&b, &lo, &hi));
	assert_int_equal(pg_bisect_pending(&b), 0);
}

static void test_inflight(void **state)
{
	(void)state;
	struct pg_inflight f;
	assert_true(pg_inflight_init(&f, 4, 100));
	uint64_t a = pg_inflight_push(&f, 110);   /* [100, 110) */
	uint64_t b = pg_inflight_push(&f, 130);   /* [110, 130) */
	uint64_t c = pg_inflight_push(&f, 131);
	uint64_t d = pg_inflight_push(&f, 150);
	assert_true(pg_inflight_full(&f));
	/* later batches commit first: the cursor waits for the oldest */
	assert_int_equal(pg_inflight_done(&f, c), 100);
	assert_int_equal(pg_inflight_done(&f, b), 100);
	assert_int_equal(pg_inflight_done(&f, a), 131);
	assert_false(pg_inflight_full(&f));
	/* the ring wraps */
	uint64_t e = pg_inflight_push(&f, 160);
	uint64_t g = pg_inflight_push(&f, 170);
	uint64_t h = pg_inflight_push(&f, 171);
	assert_true(pg_inflight_full(&f));
	assert_int_equal(pg_inflight_done(&f, g), 131);
	assert_int_equal(pg_inflight_done(&f, e), 131);
	assert_int_equal(pg_inflight_done(&f, d), 170);
	assert_int_equal(pg_inflight_done(&f, d), 170);   /* twice: no effect */
	assert_int_equal(pg_inflight_done(&f, h), 171);
	assert_int_equal(f.head, f.tail);
	/* the sequence of events a pool of 3 sees with retries: in any completion order, the cursor
	 * never passes a batch that has not committed */
	for(int perm = 0; perm < 50; perm++){
		struct pg_inflight x;
		assert_true(pg_inflight_init(&x, 8, 0));
		uint64_t seqs[8], his[8];
		for(int i = 0; i < 8; i++){
			his[i] = (uint64_t)(i + 1) * 10;
			seqs[i] = pg_inflight_push(&x, his[i]);
		}
		bool done[8] = {0};
		uint64_t rng = (uint64_t)perm * 2654435761u + 1;
		for(int k = 0; k < 8; k++){
			int i;
			do{
				rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
				i = (int)((rng >> 33) % 8);
			}while(done[i]);
			done[i] = true;
			uint64_t cur = pg_inflight_done(&x, seqs[i]);
			int first_undone = 0;
			while(first_undone < 8 && done[first_undone]) first_undone++;
			assert_int_equal(cur, first_undone ? his[first_undone - 1] : 0);
		}
		pg_inflight_free(&x);
	}
	pg_inflight_free(&f);
}

/* --- live --------------------------------------------------------------------------------------- */

struct live {
	char dir[64];
	char conninfo[600];
	struct config cfg;
	struct journal *j;
	struct journal_reader *r;
	struct metrics m;
	struct pg_sink *s;
	PGconn *db;
};

static PGconn *connect_db(const char *conninfo)
{
	PGconn *c = PQconnectdb(conninfo);
	if(PQstatus(c) != CONNECTION_OK) fail_msg("cannot connect: %s", PQerrorMessage(c));
	PQclear(PQexec(c, "SET client_min_messages = warning"));
	return c;
}

static long long sql_num(PGconn *c, const char *q)
{
	PGresult *r = PQexec(c, q);
	if(PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) fail_msg("%s: %s", q, PQresultErrorMessage(r));
	long long v = PQgetisnull(r, 0, 0) ? -1 : atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static void sql_text(PGconn *c, const char *q, char *out, size_t cap)
{
	PGresult *r = PQexec(c, q);
	if(PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) fail_msg("%s: %s", q, PQresultErrorMessage(r));
	snprintf(out, cap, "%s", PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
	PQclear(r);
}

/* a database of its own; the schema applied first when asked (else the sink makes it) */
static bool live_open(struct live *L, bool schema, const char *retention)
{
	if(!pg_base[0]) return false;
	memset(L, 0, sizeof(*L));
	char name[32], q[128];
	snprintf(name, sizeof(name), "t%d_%d", (int)getpid(), ++dbseq);
	char admin[600];
	snprintf(admin, sizeof(admin), "%s dbname=postgres", pg_base);
	PGconn *a = connect_db(admin);
	snprintf(q, sizeof(q), "CREATE DATABASE %s", name);
	sql(a, q);
	PQfinish(a);
	snprintf(L->conninfo, sizeof(L->conninfo), "%s dbname=%s", pg_base, name);
	L->db = connect_db(L->conninfo);
	if(schema){
		sql(L->db, pg_schema_base_sql());
		sql(L->db, pg_schema_hot_sql());
	}
	snprintf(L->dir, sizeof(L->dir), "/tmp/iotpipe-test-pg-XXXXXX");
	assert_non_null(mkdtemp(L->dir));
	struct config_kv kv[] = {{"journal_dir", L->dir}, {"pg_conninfo", L->conninfo}, {"pg_pool_size", "3"},
		{"pg_batch_rows", "500"}, {"pg_flush_ms", "50ms"}, {"hot_retention", retention ? retention : "7d"}};
	char err[512];
	if(!config_parse(kv, 6, &L->cfg, err, sizeof(err))) fail_msg("%s", err);
	struct journal_opts o = {.dir = L->dir, .max_bytes = 256u << 20, .readers = {"pg", NULL}};
	L->j = journal_open(&o, err, sizeof(err));
	if(!L->j) fail_msg("%s", err);
	L->r = journal_reader(L->j, "pg");
	return true;
}

static void live_start(struct live *L)
{
	char err[512];
	L->s = pg_sink_start(&L->cfg, L->r, &L->m, err, sizeof(err));
	if(!L->s) fail_msg("%s", err);
}

static void live_stop(struct live *L)
{
	pg_sink_stop(L->s);
	L->s = NULL;
}

static void live_close(struct live *L)
{
	if(L->s) live_stop(L);
	journal_close(L->j);
	run_cmd("rm -rf %s", L->dir);
	PQfinish(L->db);
	config_free(&L->cfg);
}

static void append(struct live *L, const struct outrec *r)
{
	uint8_t buf[4096];
	size_t n = outrec_encode(r, buf, sizeof(buf));
	assert_true(n > 0);
	struct iovec iov = {buf, n};
	assert_int_equal(journal_append(L->j, r->kind, &iov, 1, NULL), JOURNAL_OK);
}

static void append_reading(struct live *L, const char *dev, const char *sensor, int64_t ts, double value)
{
	struct outrec r = {
		.kind = REC_ENRICHED, .id = record_id_reading(dev, sensor, ts), .ts_ms = ts, .arrival_ms = ts + 3,
		.device_id = dev, .sensor_id = sensor, .value = value, .score = NAN, .unit = "Cel", .location = "Berlin",
	};
	append(L, &r);
}

static void wait_written(struct live *L)
{
	struct journal_stats st;
	journal_get_stats(L->j, &st);
	WAIT_FOR(journal_reader_committed(L->r) >= st.next_lsn);
}

#define LIVE_OR_SKIP(L, schema, ret) do { if(!live_open(L, schema, ret)) skip(); } while(0)

static void test_live_kinds(void **state)
{
	(void)state;
	struct live L;
	LIVE_OR_SKIP(&L, false, NULL);
	live_start(&L);
	int64_t t0 = (clock_wall_ms() / 1000) * 1000 - 60000;
	for(int i = 0; i < 1200; i++){
		char dev[16];
		snprintf(dev, sizeof(dev), "d%d", i % 10);
		append_reading(&L, dev, "temp", t0 + i, 20 + i % 7);
		if(i % 300 == 0){
			struct outrec raw = {.kind = REC_RAW, .topic = "t", .payload = (const uint8_t *)"x", .payload_len = 1};
			append(&L, &raw);
			struct outrec a = {.kind = REC_ALERT, .id = (uint64_t)i, .device_id = dev, .sensor_id = "temp", .ts_ms = t0 + i,
				.value = 40, .limit = 30, .score = 2, .alert_kind = OUT_ALERT_ZSCORE, .alert_state = OUT_ALERT_FIRING};
			append(&L, &a);
			struct outrec q = {.kind = REC_QUARANTINE, .id = (uint64_t)i + 1, .reason = 1, .detail = "bad",
				.topic = "devices/x/telemetry", .payload = (const uint8_t *)"\x01\x02", .payload_len = 2, .arrival_ms = t0};
			append(&L, &q);
			struct outrec g = {.kind = REC_AGGREGATE, .id = (uint64_t)i + 2, .device_id = dev, .sensor_id = "temp",
				.ts_ms = t0 + i, .win_end_ms = t0 + i + 1000, .count = 3, .sum = 6, .min = 1, .max = 3};
			append(&L, &g);
		}
	}
	wait_written(&L);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics"), 1200);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM alerts WHERE kind = 'zscore' AND state = 'firing'"), 4);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM quarantine WHERE payload = '\\x0102'::bytea"), 4);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics_agg WHERE avg = 2 AND count = 3"), 4);
	assert_int_equal(METRIC_GET(&L.m, pg_written), 1212);
	assert_int_equal(METRIC_GET(&L.m, pg_rejected), 0);
	char q[256], got[256];
	snprintf(q, sizeof(q), "SELECT concat_ws('|', device_id, sensor_id, (extract(epoch FROM ts) * 1000)::bigint - %lld, "
			"value, unit, location, zone, is_anomaly, zscore, lpad(to_hex(id), 16, '0')) FROM metrics WHERE device_id = 'd3' "
			"ORDER BY ts LIMIT 1", (long long)t0);
	sql_text(L.db, q, got, sizeof(got));
	char want[256];
	snprintf(want, sizeof(want), "d3|temp|3|23|Cel|Berlin|f|%016" PRIx64, record_id_reading("d3", "temp", t0 + 3));
	assert_string_equal(got, want);
	/* the schema and today's partitions came from the sink */
	char part[32];
	pg_partition_name(pg_day_of_ms(clock_wall_ms()) + PG_DAYS_AHEAD, part, sizeof(part));
	snprintf(q, sizeof(q), "SELECT count(*) FROM pg_class WHERE relname = '%s'", part);
	WAIT_FOR(sql_num(L.db, q) == 1);
	live_close(&L);
}

/* A replay (the cursor lost after a crash): the same records again, among new ones, through the
 * staging tables; no duplicate, no error. */
static void test_live_replay(void **state)
{
	(void)state;
	struct live L;
	LIVE_OR_SKIP(&L, true, NULL);
	live_start(&L);
	int64_t t0 = clock_wall_ms() - 3600000;
	for(int i = 0; i < 2000; i++) append_reading(&L, "dev", "a", t0 + i, i);
	wait_written(&L);
	live_stop(&L);
	journal_close(L.j);
	run_cmd("rm -rf %s/*", L.dir);
	char err[512];
	struct journal_opts o = {.dir = L.dir, .max_bytes = 256u << 20, .readers = {"pg", NULL}};
	L.j = journal_open(&o, err, sizeof(err));
	L.r = journal_reader(L.j, "pg");
	memset(&L.m, 0, sizeof(L.m));
	live_start(&L);
	for(int i = 0; i < 2500; i++){
		append_reading(&L, "dev", "a", t0 + i, i);
		if(i % 5 == 0) append_reading(&L, "dev", "b", t0 + i, i);
	}
	wait_written(&L);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics WHERE sensor_id = 'a'"), 2500);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics WHERE sensor_id = 'b'"), 500);
	assert_int_equal(METRIC_GET(&L.m, pg_written), 3000);
	assert_int_equal(METRIC_GET(&L.m, pg_rejected), 0);
	live_close(&L);
}

/* Rows the server refuses for their data are found and quarantined; their batch-mates are written. */
static void test_live_bad_rows(void **state)
{
	(void)state;
	struct live L;
	LIVE_OR_SKIP(&L, true, NULL);
	sql(L.db, "ALTER TABLE metrics ADD CONSTRAINT value_small CHECK (value < 1000)");
	/* the quarantine row of a refused reading from "evil" is refused too: the minimal one goes */
	sql(L.db, "ALTER TABLE quarantine ADD CONSTRAINT no_evil CHECK (device_id <> 'evil')");
	sql(L.db, "ALTER TABLE quarantine ADD CONSTRAINT no_unknown CHECK (reason <> 'unknown_device')");
	int64_t t0 = clock_wall_ms() - 600000;
	for(int i = 0; i < 1000; i++){
		bool bad = i == 0 || i == 499 || i == 999;
		append_reading(&L, i == 499 ? "evil" : "dev", "t", t0 + i, bad ? 5000 : i % 100);
		if(i == 700){
			struct outrec q = {.kind = REC_QUARANTINE, .id = 4242, .reason = 8 /* unknown_device */, .detail = "x",
				.device_id = "ghost", .topic = "devices/ghost/telemetry", .payload = (const uint8_t *)"{}",
				.payload_len = 2, .arrival_ms = t0};
			append(&L, &q);
		}
	}
	live_start(&L);
	wait_written(&L);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics"), 997);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics WHERE value >= 1000"), 0);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM quarantine WHERE reason = 'sink_rejected'"), 4);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM quarantine WHERE reason = 'sink_rejected' AND device_id = 'dev' "
			"AND detail LIKE 'postgresql: new row for relation %value_small%' AND convert_from(payload, 'UTF8')::json->>'value' = '5000'"), 2);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM quarantine WHERE device_id IS NULL AND detail LIKE '%value_small%'"), 1);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM quarantine WHERE device_id = 'ghost' AND detail LIKE '%no_unknown%' "
			"AND payload = '\\x7b7d'::bytea AND topic = 'devices/ghost/telemetry'"), 1);
	assert_int_equal(METRIC_GET(&L.m, pg_rejected), 4);
	assert_int_equal(METRIC_GET(&L.m, pg_written), 997);
	live_close(&L);
}

/* A day with no partition gets one before its rows go in; one dropped behind the sink's back is
 * made again. */
static void test_live_partitions(void **state)
{
	(void)state;
	struct live L;
	LIVE_OR_SKIP(&L, false, NULL);
	live_start(&L);
	int64_t now = clock_wall_ms();
	append_reading(&L, "d", "s", now - 20 * PG_DAY_MS, 1);
	append_reading(&L, "d", "s", now, 2);
	append_reading(&L, "d", "s", now + 2 * PG_DAY_MS, 3);
	wait_written(&L);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics"), 3);
	char name[32], q[256];
	pg_partition_name(pg_day_of_ms(now - 20 * PG_DAY_MS), name, sizeof(name));
	snprintf(q, sizeof(q), "SELECT count(*) FROM %s", name);
	assert_int_equal(sql_num(L.db, q), 1);
	/* -20 days, and today to today + 3 (made ahead by maintenance, or by this batch) */
	WAIT_FOR(sql_num(L.db, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'metrics'::regclass") == 5);
	snprintf(q, sizeof(q), "DROP TABLE %s", name);
	sql(L.db, q);
	append_reading(&L, "d", "s", now - 20 * PG_DAY_MS + 1, 4);
	wait_written(&L);
	snprintf(q, sizeof(q), "SELECT count(*) FROM %s", name);
	assert_int_equal(sql_num(L.db, q), 1);
	assert_int_equal(METRIC_GET(&L.m, pg_rejected), 0);
	live_close(&L);
}

/* Partitions past hot_retention are dropped at start; others are kept. */
static void test_live_retention(void **state)
{
	(void)state;
	struct live L;
	LIVE_OR_SKIP(&L, true, "3d");
	int32_t today = pg_day_of_ms(clock_wall_ms());
	int32_t days[] = {today - 30, today - 4, today - 3, today - 1};
	for(size_t i = 0; i < 4; i++){
		char ddl[256];
		pg_partition_ddl(days[i], ddl, sizeof(ddl));
		sql(L.db, ddl);
	}
	sql(L.db, "CREATE TABLE metrics_manual PARTITION OF metrics FOR VALUES FROM ('1999-01-01') TO ('1999-01-02')");
	live_start(&L);
	char q[256], name[32];
	pg_partition_name(today - 4, name, sizeof(name));
	snprintf(q, sizeof(q), "SELECT count(*) FROM pg_class WHERE relname = '%s'", name);
	WAIT_FOR(sql_num(L.db, q) == 0);
	pg_partition_name(today - 30, name, sizeof(name));
	snprintf(q, sizeof(q), "SELECT count(*) FROM pg_class WHERE relname = '%s'", name);
	assert_int_equal(sql_num(L.db, q), 0);
	/* today - 3 still holds rows younger than 3 days; foreign tables are not ours to drop */
	pg_partition_name(today - 3, name, sizeof(name));
	snprintf(q, sizeof(q), "SELECT count(*) FROM pg_class WHERE relname = '%s'", name);
	assert_int_equal(sql_num(L.db, q), 1);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM pg_class WHERE relname = 'metrics_manual'"), 1);
	live_close(&L);
}

/* The server ends the sink's connections under load: they come back, nothing is lost or doubled. */
static void test_live_connections_killed(void **state)
{
	(void)state;
	struct live L;
	LIVE_OR_SKIP(&L, true, NULL);
	live_start(&L);
	int64_t t0 = clock_wall_ms() - 600000;
	int total = 0;
	for(int round = 0; round < 6; round++){
		for(int i = 0; i < 3000; i++, total++) append_reading(&L, "k", "s", t0 + total, total);
		nap_ms(30);
		sql(L.db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'iotpipe' "
				"AND pid <> pg_backend_pid()");
	}
	wait_written(&L);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics"), total);
	assert_int_equal(sql_num(L.db, "SELECT count(DISTINCT value) FROM metrics"), total);
	assert_true(METRIC_GET(&L.m, pg_retries) > 0);
	live_close(&L);
}

/* Down at start: the sink starts anyway, and writes everything once the server is up. */
static void test_live_down_at_start(void **state)
{
	(void)state;
	if(!pg_dir[0]) skip();   /* needs a server this run may stop */
	struct live L;
	LIVE_OR_SKIP(&L, false, NULL);
	assert_true(run_cmd("bash '%s/ci/pg.sh' stop %s >/dev/null", IOTPIPE_SOURCE_DIR, pg_dir));
	uint64_t before = journal_reader_committed(L.r);
	live_start(&L);
	int64_t t0 = clock_wall_ms() - 1000;
	for(int i = 0; i < 1000; i++) append_reading(&L, "z", "s", t0 + i, i);
	nap_ms(1500);
	assert_int_equal(journal_reader_committed(L.r), before);
	assert_true(run_cmd("bash '%s/ci/pg.sh' start %s %d >/dev/null", IOTPIPE_SOURCE_DIR, pg_dir, pg_port));
	PQfinish(L.db);
	L.db = connect_db(L.conninfo);
	wait_written(&L);
	assert_int_equal(sql_num(L.db, "SELECT count(*) FROM metrics"), 1000);
	assert_true(METRIC_GET(&L.m, pg_retries) > 0);
	live_close(&L);
}

static void test_bad_conninfo(void **state)
{
	(void)state;
	struct config_kv kv[] = {{"journal_dir", "/tmp"}, {"pg_conninfo", "host=x password=s3cret port"}};
	struct config cfg;
	char err[512];
	assert_true(config_parse(kv, 2, &cfg, err, sizeof(err)));
	struct metrics m;
	memset(&m, 0, sizeof(m));
	struct journal_reader *none = NULL;
	assert_null(pg_sink_start(&cfg, none, &m, err, sizeof(err)));
	assert_non_null(strstr(err, "plugin_opt_pg_conninfo: not a valid libpq connection string"));
	assert_null(strstr(err, "s3cret"));
	config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_encode_metrics),
		cmocka_unit_test(test_encode_other_kinds),
		cmocka_unit_test(test_tuples_span),
		cmocka_unit_test(test_tuple_json),
		cmocka_unit_test(test_reject_row),
		cmocka_unit_test(test_bisect),
		cmocka_unit_test(test_inflight),
		cmocka_unit_test(test_bad_conninfo),
	};
	const struct CMUnitTest live[] = {
		cmocka_unit_test(test_live_kinds),
		cmocka_unit_test(test_live_replay),
		cmocka_unit_test(test_live_bad_rows),
		cmocka_unit_test(test_live_partitions),
		cmocka_unit_test(test_live_retention),
		cmocka_unit_test(test_live_connections_killed),
		cmocka_unit_test(test_live_down_at_start),
	};
	int failed = cmocka_run_group_tests_name("pg_sink", pure, NULL, NULL);
	failed += cmocka_run_group_tests_name("pg_sink_live", live, live_setup, live_teardown);
	return failed;
}
