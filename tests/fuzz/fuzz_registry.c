/* libFuzzer target: the JSON registry parser. Any input either fails with a message or yields a
 * snapshot whose invariants hold; nothing leaks either way. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

/* not CHECK(): release builds define NDEBUG, and the checks are the point */
#define CHECK(x) do { \
	if(!(x)){ \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x); \
		abort(); \
	} \
} while(0)

static void check(const struct ip_registry *r)
{
	const struct ip_device_info *d;
	size_t n = 0;

	CHECK(registry_version(r) > 0);
	/* Walk the snapshot through the public device list: every device is findable by its id. */
	for(d = registry_first(r); d != NULL; d = registry_next(d)){
		n++;
		CHECK(registry_id_check(d->device_id) == NULL);
		CHECK(registry_find(r, d->device_id) == d);
		CHECK(d->any_sensor == (d->nsensors == 0));
		if(d->nsensors > 0){
			CHECK(d->sensors != NULL);
			CHECK(registry_sensor(d, "") == &d->sensors[0]);
		}else{
			CHECK(registry_sensor(d, "") == NULL);
		}
		for(size_t i = 0; i < d->nsensors; i++){
			const struct ip_sensor_info *s = &d->sensors[i];
			CHECK(registry_id_check(s->sensor_id) == NULL);
			CHECK(registry_sensor(d, s->sensor_id) == s);
			CHECK(memchr(s->unit, '\0', sizeof(s->unit)) != NULL);
			CHECK(!isnan(s->min) && !isnan(s->max) && s->min <= s->max);
			CHECK(s->anomaly_z >= 0 && isfinite(s->anomaly_z));
		}
	}
	CHECK(n == registry_count(r));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ip_registry *r = NULL;
	char err[256];

	err[0] = '\0';
	if(registry_parse_json((const char *)data, size, &r, err, sizeof(err))){
		CHECK(r != NULL);
		check(r);
		registry_free(r);
	}else{
		CHECK(r == NULL);
		CHECK(err[0] != '\0');
	}
	return 0;
}
