/* libFuzzer target for payload_parse: no crash, no over-read (the input is copied into a block of
 * exactly its size, with no NUL after it), and the result invariants hold, else abort(). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "payload.h"
#include "units.h"

#define NOW 1700000000000LL
#define CAP 8   /* small, so that capacity overflow is reached too */

static void check(bool ok)
{
	if(!ok) abort();
}

static bool terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

/* The id rule, written again independently of the parser: 1..IP_ID_MAX-1 bytes, no control
 * characters, no '/', '+', '#'. */
static bool id_valid(const char *s)
{
	size_t len = strlen(s);

	if(len == 0 || len >= IP_ID_MAX) return false;
	for(size_t i = 0; i < len; i++){
		unsigned char c = (unsigned char)s[i];

		if(c < 0x20 || c == 0x7F || c == '/' || c == '+' || c == '#') return false;
	}
	return true;
}

static bool unit_valid(const char *s)
{
	for(; *s; s++){
		if((unsigned char)*s < 0x20 || *s == 0x7F) return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ip_reading out[CAP];
	struct payload_result res;
	enum ip_reason rc;
	char *buf = malloc(size ? size : 1);

	if(!buf) return 0;
	if(size) memcpy(buf, data, size);
	rc = payload_parse(buf, size, NOW, out, CAP, &res);

	check(rc == res.reason);
	check((unsigned)rc < IP_R__COUNT);
	check(terminated(res.detail, sizeof(res.detail)));
	check(res.form <= IP_FORM_SENML);
	check(res.count <= CAP);
	if(rc != IP_OK){
		check(res.count == 0);
		check(res.detail[0] != '\0');
	}else{
		check(res.count >= 1);
		check(res.detail[0] == '\0');
		check(res.form != IP_FORM_NONE);
		if(res.form == IP_FORM_SINGLE) check(res.count == 1);
	}
	for(size_t i = 0; i < res.count; i++){
		const struct ip_reading *r = &out[i];

		check((unsigned)r->reason < IP_R__COUNT);
		check(terminated(r->device_id, sizeof(r->device_id)));
		check(terminated(r->sensor_id, sizeof(r->sensor_id)));
		check(terminated(r->unit, sizeof(r->unit)));
		check(terminated(r->detail, sizeof(r->detail)));
		if(r->ts_missing) check(r->ts_ms == NOW);
		if(r->reason != IP_OK){
			check(r->detail[0] != '\0');
			continue;
		}
		check(r->detail[0] == '\0');
		check(isfinite(r->value));
		check(r->ts_ms >= 0 && r->ts_ms <= IP_TS_MAX_MS);
		check(r->device_id[0] == '\0' || id_valid(r->device_id));
		check(r->sensor_id[0] == '\0' || id_valid(r->sensor_id));
		check(unit_valid(r->unit));
		if(res.form == IP_FORM_SINGLE || res.form == IP_FORM_MULTI){
			/* only SenML names may leave the sensor to the device's default */
			check(res.form == IP_FORM_SINGLE || r->sensor_id[0] != '\0');
		}
		/* what the processor does next with a reported unit */
		double v;
		if(units_convert(r->value, r->unit, "Cel", &v) && r->unit[0] != '\0' && strcmp(r->unit, "Cel")){
			check(units_known(r->unit));
		}
	}
	free(buf);
	return 0;
}
